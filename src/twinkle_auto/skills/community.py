"""Community skills from ModelScope: best effort, bounded in time, cached on disk.

Why cached: start-up must not depend on the network. The manager loads the cache first (local disk,
milliseconds), then asks the hub for fresh copies in the background; a failed or slow refresh leaves the
cached copies in place and is logged, never shown as an error to the person chatting.

On the hub a skill is a repository of type `skill` holding a `SKILL.md` (front matter: name, description,
version). `HubApi.list_repos("skill", search=…)` finds them and `HubApi.download_repo(…, "skill")`
fetches the repository as a zip archive.

Cache layout, under TWINKLE_HOME/auto/skills/cache/community/: `index.json` (query, fetch time, one entry
per skill) and one `<owner>__<name>.md` per skill, each written atomically.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from twinkle_auto.skills.hub import HUB_TIMEOUT, call_with_deadline, describe, hub_api
from twinkle_auto.skills.skill import COMMUNITY, MAX_SKILL_CHARS, Skill, SkillError, parse_skill
from twinkle_auto.skills.sources import MAX_FILE_BYTES, Problem

log = logging.getLogger(__name__)

DEFAULT_QUERY = "twinkle"
"""What to search the hub's skills for: skills about Twinkle training, the subject of this assistant."""
DEFAULT_LIMIT = 5
"""At most this many community skills: each costs prompt space, and each is untrusted text."""
INDEX_FILE = "index.json"
_SAFE_RE = re.compile(r"[^A-Za-z0-9._-]")


def _cache_name(repo_id: str) -> str:
    return _SAFE_RE.sub("_", repo_id.replace("/", "__"))[:150] + ".md"


def _write_atomic(path: Path, data: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(data, encoding="utf-8")
    os.replace(tmp, path)


def _find_skill_md(root: Path) -> Path | None:
    """SKILL.md at the top of an extracted repository (any case), else a single top-level .md file."""
    top = sorted(p for p in root.iterdir() if p.is_file())
    for p in top:
        if p.name.lower() == "skill.md":
            return p
    mds = [p for p in top if p.suffix.lower() == ".md" and p.stem.lower() != "readme"]
    return mds[0] if len(mds) == 1 else None


class CommunitySkills:
    """Finds, downloads and caches community skills; every one is marked untrusted."""

    def __init__(
        self,
        cache_root: Path,
        query: str = DEFAULT_QUERY,
        limit: int = DEFAULT_LIMIT,
        timeout: float = HUB_TIMEOUT,
        max_chars: int = MAX_SKILL_CHARS,
    ) -> None:
        self.dir = cache_root / "community"
        self.query = query
        self.limit = max(1, limit)
        self.timeout = timeout
        self.max_chars = max_chars

    # -------------------------------------------------------------------------------------------- cache
    def load_cached(self) -> tuple[list[Skill], list[Problem]]:
        """The skills of the last successful refresh (nothing if there was none)."""
        try:
            index = json.loads((self.dir / INDEX_FILE).read_text(encoding="utf-8"))
            entries = index.get("skills", [])
        except FileNotFoundError:
            return [], []
        except (OSError, ValueError, AttributeError) as exc:
            log.warning("community skill cache unreadable (%s); ignoring it", exc)
            return [], [Problem(COMMUNITY, str(self.dir / INDEX_FILE), f"cache index unreadable: {exc}")]
        skills: list[Skill] = []
        problems: list[Problem] = []
        for entry in entries if isinstance(entries, list) else []:
            try:
                repo_id, file = str(entry["repo_id"]), str(entry["file"])
                if Path(file).name != file:
                    raise SkillError("cache entry points outside the cache")
                text = (self.dir / file).read_text(encoding="utf-8")
                skills.append(self._parse(repo_id, text))
            except (KeyError, TypeError, OSError, UnicodeDecodeError, SkillError) as exc:
                problems.append(Problem(COMMUNITY, f"cache:{entry}", f"cached skill unusable: {exc}"))
        return skills, problems

    def _parse(self, repo_id: str, text: str) -> Skill:
        return parse_skill(
            text,
            source=COMMUNITY,
            origin=f"modelscope:{repo_id}",
            max_chars=self.max_chars,
            fallback_name=repo_id.rsplit("/", 1)[-1],
        )

    # ------------------------------------------------------------------------------------------ refresh
    def refresh(self) -> tuple[list[Skill], list[Problem]]:
        """Fresh skills from the hub within `timeout` seconds, written to the cache.

        Raises HubUnavailable (missing client, unreachable, timeout) or the client's own error when the
        listing itself fails; a single skill that fails to download or parse is a Problem, not a failure.
        """
        fetched, problems = call_with_deadline(self._fetch, self.timeout, "ModelScope skill search")
        skills: list[Skill] = []
        for repo_id, text in fetched:
            try:
                skills.append(self._parse(repo_id, text))
            except SkillError as exc:
                problems.append(Problem(COMMUNITY, f"modelscope:{repo_id}", str(exc)))
        return skills, problems

    def _fetch(self) -> tuple[list[tuple[str, str]], list[Problem]]:
        """List and download (blocking; runs in the deadline thread). Writes the cache when done."""
        api = hub_api()
        page = api.list_repos("skill", search=self.query or None, page_size=self.limit)
        self.dir.mkdir(parents=True, exist_ok=True)
        fetched: list[tuple[str, str]] = []
        problems: list[Problem] = []
        for info in list(page.items)[: self.limit]:
            repo_id = info.repo_id
            if not repo_id:
                problems.append(
                    Problem(COMMUNITY, f"modelscope:{info.id}", "listing entry has no owner/name")
                )
                continue
            try:
                fetched.append((repo_id, self._download(api, repo_id)))
            except Exception as exc:  # one bad skill must not cost the others
                problems.append(
                    Problem(COMMUNITY, f"modelscope:{repo_id}", f"download failed: {describe(exc)}")
                )
        self._write_cache(fetched)
        return fetched, problems

    def _download(self, api: Any, repo_id: str) -> str:
        tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=self.dir))
        try:
            root = Path(api.download_repo(repo_id, "skill", local_dir=tmp))
            path = _find_skill_md(root)
            if path is None:
                raise SkillError("the repository has no SKILL.md")
            if path.stat().st_size > MAX_FILE_BYTES:
                raise SkillError(f"SKILL.md is larger than {MAX_FILE_BYTES} bytes")
            return path.read_bytes().decode("utf-8")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _write_cache(self, fetched: list[tuple[str, str]]) -> None:
        entries = []
        for repo_id, text in fetched:
            file = _cache_name(repo_id)
            _write_atomic(self.dir / file, text)
            entries.append({"repo_id": repo_id, "file": file})
        index = {"query": self.query, "fetched_at": time.time(), "skills": entries}
        _write_atomic(self.dir / INDEX_FILE, json.dumps(index, indent=1))
        keep = {e["file"] for e in entries} | {INDEX_FILE}
        for stale in self.dir.glob("*.md"):
            if stale.name not in keep:
                stale.unlink(missing_ok=True)
