"""engine.scheduling.choose: full calls of one prompt length, and no window left waiting for ever."""

import pytest

from engine.scheduling import MAX_AGE, choose


def test_picks_the_largest_group_of_one_prompt_length():
    lengths = [225, 1, 1, 66, 1, 225]
    assert choose(lengths, [0] * 6, batch_size=8) == [1, 2, 4]


def test_a_call_never_exceeds_the_batch():
    assert choose([1] * 10, [0] * 10, batch_size=4) == [0, 1, 2, 3]


def test_ties_go_to_the_group_that_waited_longest():
    assert choose([66, 1, 66, 1], [0] * 4, batch_size=8) == [0, 2]


def test_a_window_passed_over_max_age_times_goes_next():
    lengths, ages = [225, 1, 1, 1], [MAX_AGE, 0, 0, 0]
    assert choose(lengths, ages, batch_size=8) == [0]


def test_every_window_is_served_within_a_few_steps():
    """Simulate a stream: each step, new short-prompt windows arrive; the lone long one still goes."""
    waiting = [(225, 0)] + [(1, 0)] * 3
    for step in range(MAX_AGE + 2):
        picked = set(choose([n for n, _ in waiting], [a for _, a in waiting], batch_size=2))
        if any(waiting[i][0] == 225 for i in picked):
            break
        waiting = [(n, a + 1) for i, (n, a) in enumerate(waiting) if i not in picked] + [(1, 0)] * 2
    else:
        raise AssertionError("the long-prompt window was never decoded")
    assert step == MAX_AGE


def test_nothing_waiting():
    assert choose([], [], batch_size=8) == []


def test_the_file_with_most_audio_left_goes_first_with_its_prompt_length():
    """The critical path first: a long file's window beats a bigger group of short ones."""
    lengths, remaining = [1, 1, 225, 1, 225, 225], [20.0, 25.0, 240.0, 10.0, 30.0, 900.0]
    assert choose(lengths, [0] * 6, batch_size=2, remaining=remaining) == [5, 2]


def test_age_still_beats_urgency():
    lengths, remaining = [1, 225], [5.0, 900.0]
    assert choose(lengths, [MAX_AGE - 1, 0], batch_size=4, remaining=remaining) == [1]
    assert choose(lengths, [MAX_AGE, 0], batch_size=4, remaining=remaining) == [0]


def test_previous_text_is_cut_to_few_lengths():
    """Prompts of files at different points share a length often enough to fill calls."""
    from engine.decoding import previous_context

    lengths = {len(previous_context(list(range(n)))) for n in range(0, 400)}
    assert lengths == {0, 1, 2, 4, 8, 16, 32, 64, 128, 223}
    assert previous_context(list(range(300)))[-1] == 299  # the most recent text is what is kept


def test_default_replicas_per_device(monkeypatch):
    """Worker sizing: 2 replicas on a CPU with 2+ threads, 4 on a GPU (measured on an H200: batch rows
    cost nearly as much as calls there), 1 without batching; RuntimeOptions.replicas overrides it in a worker
    (tests/test_pool.py)."""
    from engine.backends import ctranslate2_backend as ct2b

    monkeypatch.setattr(ct2b, "resolve_device", lambda compute: "cuda" if compute == "gpu" else "cpu")
    assert ct2b.default_replicas("cpu", 2, 8) == 2 and ct2b.default_replicas("cpu", 1, 8) == 1
    assert ct2b.default_replicas("cpu", 2, 1) == 1 and ct2b.default_replicas("gpu", 0, 1) == 1
    assert ct2b.default_replicas("gpu", 0, 8) == 4 and ct2b.default_replicas("gpu", 0, 2) == 2


def test_runtime_options_are_checked():
    from engine.options import RuntimeOptions

    assert RuntimeOptions() == RuntimeOptions(replicas=None, vad_processes=None)
    with pytest.raises(ValueError, match="replicas"):
        RuntimeOptions(replicas=0)
    with pytest.raises(ValueError, match="vad_processes"):
        RuntimeOptions(vad_processes=-1)
