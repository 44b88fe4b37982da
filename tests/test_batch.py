"""`text2fx batch` plumbing with the cheap stand-in embedder (`doubles.spectral_engine`): manifests, per-row
failures, deterministic names, grouping, resume, the summary, an interrupted run, and a local worker killed
mid-run. The same with the CLAP test model, and on Ray, is in test_batch_workers.py."""

import json
import sys

import numpy as np
import pytest
import soundfile as sf

from signals import tone
from text2fx import pipeline
from text2fx.batch import manifest, summary
from text2fx.batch.runner import plan, run_batch
from text2fx.cli import main
from text2fx.errors import UsageError
from text2fx.options import EngineOptions, JobOptions

FACTORY = "doubles:spectral_engine"
QUICK = {"steps": 2, "restarts": 1, "chain": "eq"}


def write_clips(folder, n, sr=16000, seconds=1.0):
    paths = []
    for k in range(n):
        path = folder / f"clip{k}.wav"
        sf.write(path, tone(seconds=seconds, seed=k).T, sr, subtype="PCM_16")
        paths.append(path)
    return paths


def write_csv(path, header, rows):
    path.write_text(",".join(header) + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return path


def batch(man, out, workers=1, max_batch=16, **kwargs):
    return run_batch(man, out, {**QUICK, **kwargs.pop("defaults", {})}, EngineOptions(max_batch=max_batch),
                     workers=workers, engine_factory=FACTORY, **kwargs)


@pytest.fixture
def bad_inputs(tmp_path):
    sf.write(tmp_path / "silent.wav", np.zeros(16000, np.float32), 16000)
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF not really audio")
    return tmp_path


def test_rows_fail_alone_with_one_line_reasons_and_the_batch_goes_on(tmp_path, bad_inputs):
    write_clips(tmp_path, 2)
    man = write_csv(tmp_path / "items.csv", ["input", "prompt", "chain", "steps"], [
        ["clip0.wav", "warm", "", ""], ["silent.wav", "warm", "", ""], ["corrupt.wav", "warm", "", ""],
        ["missing.wav", "warm", "", ""], ["clip1.wav", "dark", "nonsense", ""], ["clip1.wav", "dark", "", "abc"],
        ["clip1.wav", "", "", ""], ["clip1.wav", "bright", "", ""],
    ])
    out = batch(man, tmp_path / "out")
    status = {e.row: (e.status, e.error) for e in out.entries}
    assert [status[r][0] for r in range(1, 9)] == ["done"] + ["failed"] * 6 + ["done"]
    for row, words in {2: "audio is silent", 3: "corrupt or unsupported", 4: "input file not found",
                       5: "unknown effect 'nonsense'", 6: "steps must be an integer, got 'abc'", 7: "no prompt"}.items():
        assert words in status[row][1] and "\n" not in status[row][1]
    table = summary.read(out.summary_path)
    assert [r["status"] for r in table] == [s for s, _ in (status[r] for r in range(1, 9))]
    assert table[0]["similarity_after"] >= table[0]["similarity_before"] and table[0]["settings"].endswith(".json")


def test_names_are_deterministic_and_reports_record_the_settings_hash(tmp_path):
    write_clips(tmp_path, 1)
    man = tmp_path / "items.jsonl"
    man.write_text(json.dumps({"input": "clip0.wav", "prompt": "Warm & bright", "seed": 3}) + "\n")
    first = batch(man, tmp_path / "a").entries[0]
    second = batch(man, tmp_path / "b").entries[0]
    name = first.output.rsplit("/", 1)[1]
    assert name == second.output.rsplit("/", 1)[1]
    assert name.startswith("clip0.warm-bright.") and name.endswith(".wav") and len(name.split(".")[2]) == 8
    report = json.loads(open(first.settings).read())
    assert report["batch"]["settings_hash"].startswith(name.split(".")[2])
    assert report["batch"]["settings"]["seed"] == 3 and report["optimization"]["seed"] == 3
    import jsonschema

    from text2fx.report import schema

    jsonschema.validate(report, schema())


def test_a_rerun_skips_rows_whose_outputs_match_and_redoes_the_rest(tmp_path):
    write_clips(tmp_path, 3)
    man = write_csv(tmp_path / "items.csv", ["input", "prompt"], [[f"clip{k}.wav", "warm"] for k in range(3)])
    first = batch(man, tmp_path / "out")
    assert [e.status for e in first.entries] == ["done"] * 3
    # one output lost, one report made for other settings: those two run again, the third is skipped
    from pathlib import Path

    Path(first.entries[0].output).unlink()
    report = json.loads(open(first.entries[1].settings).read())
    report["batch"]["settings_hash"] = "0" * 64
    Path(first.entries[1].settings).write_text(json.dumps(report))
    again = batch(man, tmp_path / "out")
    assert [e.status for e in again.entries] == ["done", "done", "skipped"]
    # other settings for a row: a new output beside the old one
    changed = batch(man, tmp_path / "out", defaults={"seed": 1})
    assert all(e.status == "done" for e in changed.entries)
    assert {e.output for e in changed.entries}.isdisjoint({e.output for e in first.entries})


def test_rows_with_the_same_options_share_tasks_of_at_most_max_batch_clips(tmp_path):
    write_clips(tmp_path, 5)
    rows = [[f"clip{k}.wav", p, "eq"] for k in range(5) for p in ("warm", "dark")] + [["clip0.wav", "warm", "reverb"]]
    man = write_csv(tmp_path / "items.csv", ["input", "prompt", "chain"], rows)
    the_plan = plan(man, tmp_path / "out", {"restarts": 2}, "cpu", max_batch=4)
    sizes = sorted((t.options["chain"], len(t.items)) for t in the_plan.tasks)
    assert sizes == [("eq", 2)] * 5 + [("reverb", 1)]  # 2 restarts x 1 excerpt per row: 2 rows per 4 clips
    for task in the_plan.tasks:
        assert len({json.dumps(task.options, sort_keys=True)}) == 1


def test_a_job_over_explicit_pairs_runs_only_those(tmp_path):
    from doubles import SpectralTestEmbedder
    from text2fx.engine import Engine

    engine = Engine(SpectralTestEmbedder())
    job = pipeline.array_job([tone(seed=0), tone(seed=1)], 16000, JobOptions(prompts=["warm", "dark"], chain="eq",
                                                                            recipe_changes={"steps": 2}))
    job.selected = [(1, 0), (0, 1)]
    results = pipeline.run(engine, job)
    assert [r.prompt for r in results] == ["warm", "dark"]
    alone = engine.apply([tone(seed=1)], 16000, ["warm"], chain="eq", steps=2)[0]
    assert abs(alone.similarity_after - results[0].similarity_after) < 1e-5


def test_an_interrupted_run_leaves_a_valid_summary_and_resumes(tmp_path):
    write_clips(tmp_path, 4)
    man = write_csv(tmp_path / "items.csv", ["input", "prompt"], [[f"clip{k}.wav", "warm"] for k in range(4)])

    def stop(pool, in_flight):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        batch(man, tmp_path / "out", max_batch=1, after_task=stop)
    table = summary.read(tmp_path / "out" / "summary.csv")
    assert [r["status"] for r in table] == ["done", "pending", "pending", "pending"]
    assert not [p for p in (tmp_path / "out").iterdir() if ".partial" in p.name]
    again = batch(man, tmp_path / "out", max_batch=1)
    assert [e.status for e in again.entries] == ["skipped", "done", "done", "done"]


def test_a_local_worker_killed_mid_run_fails_only_its_rows(tmp_path, bad_inputs):
    write_clips(tmp_path, 6)
    rows = [[f"clip{k}.wav", "warm"] for k in range(6)] + [["silent.wav", "warm"]]
    man = write_csv(tmp_path / "items.csv", ["input", "prompt"], rows)
    killed = []

    def kill_one(pool, in_flight):
        running = [w for w in in_flight if pool.workers[w].ready]
        if not killed and running:
            killed.append(running[0])
            pool.kill(running[0])

    # Rows long enough (30 steps) that the first worker cannot finish all but one of them while the second
    # is still starting: otherwise no row is ever running on a ready worker when one finishes.
    first = batch(man, tmp_path / "out", workers=2, max_batch=1, after_task=kill_one, defaults={"steps": 30})
    assert killed
    statuses = {e.row: e for e in first.entries}
    assert all(e.status in ("done", "failed") and (e.status == "done") == (e.error is None) for e in first.entries)
    died = [e.row for e in first.entries if e.error and "died" in e.error]
    assert len(died) == 1 and "worker" in statuses[died[0]].error
    assert "silent" in statuses[7].error
    again = batch(man, tmp_path / "out", workers=2, max_batch=1, defaults={"steps": 30})
    expected = {r: ("skipped" if statuses[r].status == "done" else "done") for r in range(1, 7)}
    assert {e.row: e.status for e in again.entries if e.row <= 6} == expected
    assert again.entries[6].status == "failed"


def test_manifest_level_problems_are_usage_errors(tmp_path, capsys):
    write_clips(tmp_path, 1)
    cases = [
        (tmp_path / "nope.csv", None, "manifest not found"),
        (tmp_path / "items.txt", "input\nclip0.wav\n", "use a .csv file"),
        (tmp_path / "typo.csv", "input,promt\nclip0.wav,warm\n", "unknown column 'promt'"),
        (tmp_path / "noinput.csv", "file,prompt\nclip0.wav,warm\n", "must name an 'input' column"),
        (tmp_path / "empty.jsonl", "\n", "has no rows"),
    ]
    for path, text, words in cases:
        if text is not None:
            path.write_text(text)
        with pytest.raises(UsageError, match=words):
            manifest.read(path)
        code = main(["batch", str(path), "-o", str(tmp_path / "out")])
        err = capsys.readouterr().err.strip()
        assert code == 2 and words in err and "\n" not in err
    ok = write_csv(tmp_path / "ok.csv", ["input", "prompt"], [["clip0.wav", "warm"]])
    for args, words in [(["--chain", "nope"], "unknown effect"), (["--workers", "0"], "at least 1"),
                        (["--steps", "0"], "steps must be at least 1")]:
        assert main(["batch", str(ok), "-o", str(tmp_path / "out"), *args]) == 2
        assert words in capsys.readouterr().err


def test_ray_missing_is_a_one_line_error_saying_how_to_install(tmp_path, monkeypatch, capsys):
    write_clips(tmp_path, 1)
    ok = write_csv(tmp_path / "ok.csv", ["input", "prompt"], [["clip0.wav", "warm"]])
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    code = main(["batch", str(ok), "-o", str(tmp_path / "out"), "--ray", "auto"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "pip install 'text2fx[ray]'" in err and "\n" not in err


def test_keep_length_is_a_row_option_with_a_command_line_default_and_part_of_the_hash(tmp_path):
    write_clips(tmp_path, 1)
    man = write_csv(tmp_path / "items.csv", ["input", "prompt", "chain", "keep_length"], [
        ["clip0.wav", "airy", "reverb", ""], ["clip0.wav", "airy", "reverb", "true"],
        ["clip0.wav", "airy", "reverb", "no"], ["clip0.wav", "airy", "reverb", "maybe"]])
    rows = [manifest.check(raw, {"keep_length": True}, tmp_path) for raw in manifest.read(man)[:3]]
    assert [r.options.keep_length for r in rows] == [True, True, False]
    assert [r.settings["keep_length"] for r in rows] == [True, True, False]
    assert rows[0].settings_hash == rows[1].settings_hash != rows[2].settings_hash
    assert rows[0].group_key != rows[2].group_key
    with pytest.raises(UsageError, match="keep_length must be true or false, got 'maybe'"):
        manifest.check(manifest.read(man)[3], {}, tmp_path)


def test_batch_outputs_keep_the_tail_unless_keep_length(tmp_path):
    write_clips(tmp_path, 1)
    man = write_csv(tmp_path / "items.csv", ["input", "prompt", "keep_length"],
                    [["clip0.wav", "airy", ""], ["clip0.wav", "airy", "true"]])
    out = batch(man, tmp_path / "out", defaults={"chain": "reverb"})
    assert [e.status for e in out.entries] == ["done", "done"]
    reports = [json.loads(open(e.settings).read()) for e in out.entries]
    assert [r["output"]["keep_length"] for r in reports] == [False, True]
    assert [sf.info(e.output).frames for e in out.entries] == [16000 + reports[0]["output"]["tail_frames"], 16000]
    assert not reports[0]["bypassed"] and reports[0]["output"]["tail_frames"] > 0


def test_batch_command_keep_length_is_the_default_for_rows(tmp_path):
    from text2fx.batch.cli import defaults_from, parser

    assert defaults_from(parser().parse_args(["m.csv", "-o", "out", "--keep-length"]))["keep_length"] is True
    assert "keep_length" not in defaults_from(parser().parse_args(["m.csv", "-o", "out"]))
