"""`text2fx batch` on the CLAP test model (random weights, tests/conftest.py) with real workers: the command
end to end, two local worker processes and two Ray actors, each with one worker killed mid-run; every row
must end done or failed with a reason, and a re-run must complete only the missing rows.

The Ray tests start their own local Ray instance on the loopback interface and shut it down after; they are
skipped (saying why) only where Ray cannot be imported."""

import pytest
import soundfile as sf

from signals import tone
from text2fx.batch import summary
from text2fx.batch.runner import run_batch
from text2fx.cli import main
from text2fx.options import EngineOptions

QUICK = {"steps": 2, "restarts": 1, "excerpts": 1, "chain": "eq"}


def clips_manifest(folder, n):
    lines = ["input,prompt"]
    for k in range(n):
        sf.write(folder / f"clip{k}.wav", tone(sr=16000, seconds=1.0, seed=k).T, 16000)
        lines.append(f"clip{k}.wav,{'warm' if k % 2 else 'bright'}")
    sf.write(folder / "silent.wav", tone(seconds=1.0).T * 0, 16000)
    lines.append("silent.wav,warm")
    (folder / "items.csv").write_text("\n".join(lines) + "\n")
    return folder / "items.csv"


def engine_options(checkpoint, tokenizer):
    return EngineOptions(checkpoint=str(checkpoint), tokenizer=str(tokenizer), device="cpu", max_batch=1)


def kill_then_resume(man, out, options, is_ready, **kwargs):
    """Run with a worker killed while it runs a task; check every row's end and that a re-run does the rest."""
    killed = []

    def kill_one(pool, in_flight):
        running = [w for w in in_flight if is_ready(pool, w)]
        if not killed and running:
            killed.append(running[0])
            pool.kill(running[0])

    first = run_batch(man, out, QUICK, options, workers=2, after_task=kill_one, **kwargs)
    assert killed, "no worker was killed mid-run"
    rows = {e.row: e for e in first.entries}
    assert all(e.status in ("done", "failed") for e in first.entries)
    assert all((e.status == "failed") == bool(e.error) for e in first.entries)
    died = [e.row for e in first.entries if e.error and "died" in e.error]
    assert len(died) == 1, [e.error for e in first.entries]
    assert "silent" in rows[len(rows)].error
    table = summary.read(first.summary_path)
    assert [r["status"] for r in table] == [e.status for e in first.entries]

    again = run_batch(man, out, QUICK, options, workers=2, **kwargs)
    for e in again.entries[:-1]:
        assert e.status == ("skipped" if rows[e.row].status == "done" else "done"), (e.row, e.status, e.error)
    assert again.entries[-1].status == "failed"


def test_the_command_runs_a_manifest_and_its_exit_code_says_whether_a_row_failed(
        tmp_path, clap_checkpoint, clap_tokenizer_dir, capsys):
    man = clips_manifest(tmp_path, 2)
    args = ["batch", str(man), "-o", str(tmp_path / "out"), "--steps", "2", "--restarts", "1", "--chain", "eq",
            "--clap-ckpt", str(clap_checkpoint), "--tokenizer", str(clap_tokenizer_dir), "--device", "cpu",
            "--summary", str(tmp_path / "out" / "summary.jsonl")]
    assert main(args) == 1  # the silent clip
    printed = capsys.readouterr()
    assert "2 done, 0 skipped (done before), 1 failed, of 3 rows" in printed.out
    assert "row 3: failed:" in printed.err and "silent" in printed.err
    table = summary.read(tmp_path / "out" / "summary.jsonl")
    assert [r["status"] for r in table] == ["done", "done", "failed"]
    assert all(isinstance(r["similarity_after"], float) for r in table[:2])
    (tmp_path / "items2.csv").write_text("\n".join(man.read_text().splitlines()[:3]) + "\n")
    args[1] = str(tmp_path / "items2.csv")
    assert main(args + ["--quiet"]) == 0  # both rows done before: skipped, nothing loads
    assert [r["status"] for r in summary.read(tmp_path / "out" / "summary.jsonl")] == ["skipped", "skipped"]


def test_local_workers_survive_a_worker_killed_mid_run(tmp_path, clap_checkpoint, clap_tokenizer_dir):
    man = clips_manifest(tmp_path, 5)
    kill_then_resume(man, tmp_path / "out", engine_options(clap_checkpoint, clap_tokenizer_dir),
                     lambda pool, w: pool.workers[w].ready, threads=1)


@pytest.fixture
def local_ray():
    try:
        import ray
    except ImportError:
        pytest.skip("Ray is not installed (pip install 'text2fx[ray]'); the Ray tests need it")
    ray.init(address="local", include_dashboard=False, num_cpus=2, _node_ip_address="127.0.0.1",
             log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def test_ray_actors_survive_an_actor_killed_mid_run(tmp_path, clap_checkpoint, clap_tokenizer_dir, local_ray):
    man = clips_manifest(tmp_path, 5)
    kill_then_resume(man, tmp_path / "out", engine_options(clap_checkpoint, clap_tokenizer_dir),
                     lambda pool, w: pool.ready[w], ray="local")
