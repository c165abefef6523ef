"""Playback draws no more frames a second than a screen shows, and still ends on the last one."""
from __future__ import annotations

from ddpm_gui.frame_player import FramePlayer


def played_frames(qtbot, speed: str, frames: int) -> list[int]:
    player = FramePlayer()
    qtbot.addWidget(player)
    player.set_frames(list(range(frames)), index=0)
    player.loop.setChecked(False)
    player.speed.setCurrentText(speed)
    shown: list[int] = []
    player.frameChanged.connect(shown.append)
    player.play_button.setChecked(True)
    qtbot.waitUntil(lambda: not player.play_button.isChecked(), timeout=5000)
    return shown


def test_four_times_shows_every_other_frame_then_the_last(qtbot):  # 80 frames a second asked, 40 drawn
    assert played_frames(qtbot, "4×", 12) == [2, 4, 6, 8, 10, 11]


def test_normal_speed_shows_every_frame(qtbot):
    assert played_frames(qtbot, "2×", 6) == [1, 2, 3, 4, 5]
