"""Checkpoints that a preempted run resumes from, and that a crash cannot corrupt.

A run registers its stateful parts with a ``Checkpointer`` by name (anything with
``state_dict`` / ``load_state_dict``), so saving and resuming is one call each and a new piece
of state cannot be forgotten. A part is either the same on every rank (saved once, by rank 0)
or a rank's own shard (``register_rank``: sharded optimizer state, saved by every rank into its
own file and restored by the same rank; no rank ever holds the whole).

Layout under ``<results dir>/checkpoints/<run_id>/``::

    step-000120/main.pt      model, optimizer, progress and metrics so far (rank 0)
    step-000120/rank0.pt     that rank's RNG states, and its shard of a sharded optimizer (every rank)
    step-000120/COMPLETE     written last by rank 0: sizes and SHA-256 of every file

Every file is written to a temporary name and renamed. A checkpoint counts only with a
COMPLETE whose checksums match, so a partial or corrupt one is skipped (with a warning) in
favour of the previous good one, which is kept until a newer one is complete.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import shutil
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import torch

from larsbench.core.errors import ConfigError
from larsbench.core.files import atomic_write

KEEP = 2  # the newest complete checkpoint and the one before it


class Stateful(Protocol):
    def state_dict(self) -> Any: ...
    def load_state_dict(self, state: Any) -> Any: ...


class Checkpointer:
    """Saves a run's registered parts (rank 0) and every rank's RNG; restores them by name.

    ``root`` None: checkpointing is off and nothing is ever found.
    """

    def __init__(self, root: Path | None, rank: int, world_size: int, barrier: Callable[[], None]):
        self.root, self.rank, self.world_size, self.barrier = root, rank, world_size, barrier
        self.parts: dict[str, Stateful] = {}
        self.rank_parts: dict[str, Stateful] = {}
        self.found: tuple[dict[str, Any], dict[str, Any]] | None = None

    def register(self, **parts: Stateful) -> None:
        """Parts every rank holds alike: rank 0 saves them."""
        self.parts.update(parts)

    def register_rank(self, **parts: Stateful) -> None:
        """Parts each rank holds its own shard of: every rank saves and restores its own."""
        self.rank_parts.update(parts)

    def find(self) -> bool:
        """Load the newest valid checkpoint, if any (restored part by part with ``restore``)."""
        folder = latest_valid(self.root, self.world_size) if self.root is not None else None
        self.found = load(folder, self.rank) if folder is not None else None
        return self.found is not None

    def restore(self, names: Iterable[str]) -> None:
        """Hand each named part its saved state (a part registered late restores late: an
        optimizer that a backend rebuilds at wrap must load after it)."""
        assert self.found is not None, "restore() without a checkpoint found"
        main, own = self.found[0], self.found[1].get("parts", {})
        saved = {name: (own if name in self.rank_parts else main) for name in names}
        missing = [name for name in names if name not in saved[name]]
        if missing:
            raise ConfigError(
                "--run-id",
                f"its checkpoint holds no {', '.join(missing)} (written by another larsbench version, or with "
                "another optimizer_sharding); start a new run id",
            )
        for name in names:
            self.rank_parts.get(name, self.parts.get(name)).load_state_dict(saved[name][name])

    def restore_rng(self) -> None:
        assert self.found is not None, "restore_rng() without a checkpoint found"
        set_rng_state(self.found[1]["rng"])

    def save(self, step: int) -> Path | None:
        """Collective: every rank calls it."""
        if self.root is None:
            return None
        state = {name: part.state_dict() for name, part in self.parts.items()} if self.rank == 0 else None
        own = {name: part.state_dict() for name, part in self.rank_parts.items()}
        return save(self.root, step, self.rank, self.world_size, state, self.barrier, own)


def _torch_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(
    root: Path, step: int, rank: int, world_size: int, main_state: dict[str, Any] | None, barrier,
    rank_state: dict[str, Any] | None = None,
) -> Path:  # fmt: skip
    """Collective: every rank calls it. ``main_state`` is rank 0's (None elsewhere);
    ``rank_state`` this rank's own parts."""
    folder = root / f"step-{step:09d}"
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / f"rank{rank}.pt", _torch_bytes({"rng": rng_state(), "parts": rank_state or {}}))
    if rank == 0:
        atomic_write(folder / "main.pt", _torch_bytes(main_state))
    barrier()  # every rank's file is in place before rank 0 declares the checkpoint complete
    if rank == 0:
        files = ["main.pt"] + [f"rank{r}.pt" for r in range(world_size)]
        manifest = {"step": step, "world_size": world_size, "files": {name: _digest(folder / name) for name in files}}
        atomic_write(folder / "COMPLETE", json.dumps(manifest).encode())
        for old in _complete(root)[KEEP:]:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return folder


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _complete(root: Path) -> list[Path]:
    """Checkpoint folders with a COMPLETE marker, newest first."""
    if not root.is_dir():
        return []
    return sorted((p for p in root.glob("step-*") if (p / "COMPLETE").is_file()), reverse=True)


def latest_valid(root: Path, world_size: int) -> Path | None:
    """The newest checkpoint whose files all match their recorded checksums."""
    for folder in sorted(root.glob("step-*"), reverse=True) if root.is_dir() else []:
        problem = _problem(folder, world_size)
        if problem is None:
            return folder
        warnings.warn(f"skipping checkpoint {folder}: {problem}", stacklevel=2)
    return None


def _problem(folder: Path, world_size: int) -> str | None:
    try:
        manifest = json.loads((folder / "COMPLETE").read_text())
    except FileNotFoundError:
        return "incomplete (no COMPLETE marker)"
    except (OSError, ValueError) as exc:
        return f"unreadable COMPLETE marker ({exc})"
    if manifest.get("world_size") != world_size:
        return f"written by {manifest.get('world_size')} ranks, this run has {world_size}"
    for name, digest in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if _digest(path) != digest:
            return f"{name} does not match its checksum (corrupt)"
    return None


def load(folder: Path, rank: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(rank 0's main state, this rank's ``{"rng", "parts"}``) from a folder ``latest_valid``
    returned."""
    main = torch.load(folder / "main.pt", map_location="cpu", weights_only=False)
    own = torch.load(folder / f"rank{rank}.pt", map_location="cpu", weights_only=False)
    if "rng" not in own:  # written before ranks saved parts of their own: the RNG state alone
        own = {"rng": own, "parts": {}}
    return main, own
