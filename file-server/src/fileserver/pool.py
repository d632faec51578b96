"""Deterministic pool of realistic UTF-8 text files (1-8 KiB, some non-ASCII, nested folders).

Determinism matters: the same ``--seed`` and ``--count`` give byte-identical files and therefore the same
``SHA256SUMS`` on every machine, so a test or an annotator can compare a manifest hash across machines.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
from pathlib import Path

from fileserver.manifest import Entry, write_manifests

MIN_SIZE = 1024
MAX_SIZE = 8192
MARKER = ".fileserver-pool"  # a dotfile: nginx never serves it, the manifest never lists it

_EN = (
    "the annotator reads each sentence carefully and marks every entity that the guideline names while "
    "keeping an eye on ambiguous cases such as dates times places people and organisations a label is only "
    "useful when two people agree on it so the review queue samples disagreements first and sends them back "
    "with a short comment explaining which rule applied model quality follows data quality more closely than "
    "most teams expect and a clean small set often beats a noisy large one"
).split()
_FOREIGN = [
    "Größere Dateien werden über Nacht geprüft; die Prüfsumme muss übereinstimmen.",
    "Les annotateurs vérifient chaque fichier téléchargé avant de commencer leur tâche.",
    "El conjunto de datos contiene oraciones en español, con tildes y eñes: año, niño, canción.",
    "Ο σχολιαστής ελέγχει κάθε αρχείο πριν ξεκινήσει την εργασία.",
    "Аннотатор проверяет каждый файл перед началом работы.",
    "注釈者は作業を始める前に各ファイルを確認します。",
    "标注员在开始工作之前会检查每个文件的校验和。",
    "작업자는 작업을 시작하기 전에 각 파일을 확인합니다.",
    "המתייג בודק כל קובץ לפני תחילת העבודה.",
    "Kontrol toplamı eşleşmezse dosya yeniden indirilir — şüphe yok.",
    "Emoji happen in real data too: ✅ verified, ❌ mismatch, 📄 file, 🚀 fast.",
]
_TOPICS = ["news", "reviews", "dialogues", "support", "legal", "medical", "forum", "wiki"]


def _paragraph(rng: random.Random, foreign: bool) -> str:
    sentences = []
    for _ in range(rng.randint(2, 6)):
        words = rng.choices(_EN, k=rng.randint(6, 18))
        sentences.append(" ".join(words).capitalize() + rng.choice([".", ".", ".", "?", "!"]))
        if foreign and rng.random() < 0.5:
            sentences.append(rng.choice(_FOREIGN))
    return " ".join(sentences)


def _text(rng: random.Random, index: int, target: int, foreign: bool) -> bytes:
    """Build a document of exactly ``target`` bytes of valid UTF-8 (cut at a character boundary, padded)."""
    parts = [f"Document {index:06d}\n\n"]
    size = len(parts[0])
    while size < target:
        para = _paragraph(rng, foreign) + "\n\n"
        parts.append(para)
        size += len(para.encode("utf-8"))
    data = "".join(parts).encode("utf-8")[:target]
    data = data.decode("utf-8", errors="ignore").encode("utf-8")  # drop a split multi-byte character
    return data + b"\n" * (target - len(data))


def relpath_for(rng: random.Random, index: int) -> str:
    """A nested, deterministic location: 1 to 3 folder levels, like real corpora sorted by topic/batch."""
    topic = rng.choice(_TOPICS)
    depth = rng.randint(1, 3)
    parts = [topic]
    if depth >= 2:
        parts.append(f"batch-{index % 17:02d}")
    if depth >= 3:
        parts.append(f"part-{rng.randint(0, 3)}")
    return "/".join(parts + [f"doc-{index:06d}.txt"])


def generate(out: Path, count: int, seed: int = 0, progress: bool = False) -> list[Entry]:
    """Write ``count`` files plus ``SHA256SUMS`` and ``manifest.json`` into ``out`` and return the entries.

    ``out`` must be empty, missing, or a pool written earlier by this function (then replaced), so that a
    typo in ``--out`` can never wipe someone's data.
    """
    if count < 1:
        raise ValueError("--count must be at least 1")
    # files 0644 / folders 0755 whatever the caller's umask: nginx workers run as an unprivileged user
    old_umask = os.umask(0o022)
    try:
        return _generate(out, count, seed, progress)
    finally:
        os.umask(old_umask)


def _generate(out: Path, count: int, seed: int, progress: bool) -> list[Entry]:
    if out.exists():
        if not out.is_dir():
            raise ValueError(f"{out} exists and is not a folder; choose another --out")
        if any(out.iterdir()):
            if not (out / MARKER).exists():
                raise ValueError(
                    f"{out} is not empty and was not made by 'fileserver pool'; choose an empty --out"
                )
            shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o755)
    (out / MARKER).write_text(f"seed={seed} count={count}\n")
    rng = random.Random(seed)
    entries = []
    made_dirs: set[Path] = set()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=count, unit="file", desc="pool", leave=False)
    for i in range(count):
        rel = relpath_for(rng, i)
        size = rng.randint(MIN_SIZE, MAX_SIZE)
        data = _text(rng, i, size, foreign=rng.random() < 0.3)
        full = out / rel
        if full.parent not in made_dirs:
            full.parent.mkdir(parents=True, exist_ok=True)
            made_dirs.add(full.parent)
        full.write_bytes(data)
        entries.append(Entry(rel, hashlib.sha256(data).hexdigest(), len(data)))
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    write_manifests(out, entries)
    return sorted(entries, key=lambda e: e.path)
