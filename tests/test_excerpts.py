import numpy as np

from text2fx.excerpts import choose_offsets


def test_short_input_is_one_window_from_the_start():
    assert choose_offsets(500, 1000, np.ones(5), 100, 3) == [0]


def test_loudest_non_overlapping_windows_sorted_by_time():
    e = np.ones(60)
    e[30:40] = 10.0
    assert choose_offsets(6000, 1000, e, 100, 3) == [0, 1000, 3000]


def test_last_window_ends_at_the_input_end():
    e = np.ones(25)
    e[-3:] = 100.0
    offsets = choose_offsets(2450, 1000, e, 100, 1)
    assert offsets == [1450]


def test_near_silent_windows_are_skipped():
    e = np.full(60, 1e-9)
    e[10:20] = 1.0
    assert choose_offsets(6000, 1000, e, 100, 3) == [1000]
