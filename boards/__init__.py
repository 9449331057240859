"""Board definitions: one JSON file per supported board (pins, radio, sensors, flash layout)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

BOARDS_DIR = Path(__file__).resolve().parent


class UnknownBoard(KeyError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"unknown board {self.name!r}; known boards: {', '.join(board_names())}"


def board_names() -> list[str]:
    return sorted(p.stem for p in BOARDS_DIR.glob("*.json"))


def board_path(name: str) -> Path:
    path = BOARDS_DIR / f"{name}.json"
    if not path.exists():
        raise UnknownBoard(name)
    return path


def load_board(name: str) -> dict[str, Any]:
    board: dict[str, Any] = json.loads(board_path(name).read_text())
    return board
