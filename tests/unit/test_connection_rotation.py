"""When a socket past its maximum age is recycled: just after a close's finals, never across the next close."""

from __future__ import annotations

from shards.connection import ROTATE_OVERDUE_S, rotation_due

DAY = 23 * 3600.0


def test_a_socket_past_its_age_rotates_just_after_the_finals_of_a_close() -> None:
    assert not rotation_due(DAY - 1, 1.0, DAY)  # not old enough
    assert not rotation_due(DAY + 1, 0.1, DAY)  # the close's finals are still coming in
    assert rotation_due(DAY + 1, 0.6, DAY) and rotation_due(DAY + 1, 2.9, DAY)  # the burst is over: ~57 s to go
    assert not rotation_due(DAY + 30, 45.0, DAY)  # the next close is near: wait for it
    assert rotation_due(DAY + ROTATE_OVERDUE_S + 1, 45.0, DAY)  # no final for ever (a quiet stream): at once
