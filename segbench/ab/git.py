"""The git side of ``segbench ab``: the repository, refs, and temporary worktrees of them."""

from __future__ import annotations

import subprocess
from pathlib import Path

from segbench.errors import ConfigError, SegbenchError

_TIMEOUT_S = 120


class GitError(SegbenchError):
    """git could not do what ab needs (not a repository, an unknown ref, a worktree that failed)."""


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True,
                              timeout=_TIMEOUT_S, check=False)  # fmt: skip
    except FileNotFoundError:
        raise GitError("segbench ab needs git on the PATH") from None
    except subprocess.TimeoutExpired:
        raise GitError(f"git {' '.join(args)} took more than {_TIMEOUT_S} s") from None


def repository_root(cwd: Path) -> Path:
    """The top of the git working tree holding ``cwd``; ConfigError outside one."""
    found = _git(cwd, "rev-parse", "--show-toplevel")
    if found.returncode != 0:
        raise ConfigError(f"{cwd} is not inside a git repository: segbench ab compares two commits of one")
    return Path(found.stdout.strip()).resolve()


def resolve_ref(root: Path, ref: str) -> str:
    """The commit a ref names (a branch, a tag, a sha, HEAD~1...); ConfigError for an unknown ref."""
    if not ref or ref.startswith("-"):
        raise ConfigError(f"invalid ref {ref!r}")
    found = _git(root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if found.returncode != 0 or not found.stdout.strip():
        raise ConfigError(f"unknown ref {ref!r}: not a commit of {root}")
    return found.stdout.strip()


def add_worktree(root: Path, sha: str, path: Path) -> Path:
    """Check ``sha`` out, detached, at ``path`` (a new directory)."""
    found = _git(root, "worktree", "add", "--detach", "--quiet", str(path), sha)
    if found.returncode != 0:
        raise GitError(f"cannot check {sha[:12]} out into {path}: {found.stderr.strip().splitlines()[-1:]}")
    return path


def remove_worktree(root: Path, path: Path) -> None:
    """Remove a worktree ab made (its files and git's record of it); never raises."""
    _git(root, "worktree", "remove", "--force", str(path))
    _git(root, "worktree", "prune")
