"""Every file the four jukemir datasets are built from: where it lives, where to fetch it, its checksum.

URLs and checksums are jukemir's asset tables (`jukemir/assets/*.json`, Castellon et al. 2021).
GiantSteps audio is one MP3 per track; its md5 is the `md5/<id>.LOFI.md5` file of the
track's annotation archive (the same values jukemir's table lists), so the MP3 assets are
derived from the verified archives rather than retyped here.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import zipfile
from collections.abc import Collection
from pathlib import Path
from urllib.parse import urlsplit

#: Datasets with a registry, in jukemir's names (also their folders under processed/).
DATASETS = ("gtzan_ff", "magnatagatune", "giantsteps_clips", "emomusic")
#: Set to a base URL to try `<mirror>/<asset path>` before the registry's URLs.
MIRROR_ENV = "TUNEMIR_DATA_MIRROR"
#: `TUNEMIR_URL_<TAG>` overrides one asset's URL (tried first).
URL_ENV_PREFIX = "TUNEMIR_URL_"

_DNN_MGR = "https://raw.githubusercontent.com/coreyker/dnn-mgr/bdad579ea6cb37b665ea6019fe1026a6ce20cbc7/gtzan"
_MTT = "http://mi.soi.city.ac.uk/datasets/magnatagatune"
_EMO = "http://cvml.unige.ch/databases/emoMusic"
_JKU = "http://www.cp.jku.at/datasets/giantsteps"
GIANTSTEPS_ARCHIVES = {
    # tag: (repository, commit, folder of its MP3 backup on the JKU server)
    "GIANTSTEPS_MTG_KEY_ANNOTATIONS": ("giantsteps-mtg-key-dataset", "fd7b8c584f7bd6d720d170c325a6d42c9bf75a6b",
                                       "mtg_key_backup"),
    "GIANTSTEPS_KEY_ANNOTATIONS": ("giantsteps-key-dataset", "c8cb8aad2cb53f165be51ea099d0dc75c64a844f", "backup"),
}


@dataclasses.dataclass(frozen=True)
class Asset:
    """One downloadable file. `path` is relative to the datasets root (`<cache>/datasets`);
    `urls` are tried in order (the first is the original host, later ones known mirrors);
    `checksum` is hex md5 (32 digits), sha1 (40) or sha256 (64), chosen by its length as
    jukemir does. An `optional` asset's failure is reported but does not fail the dataset."""

    tag: str
    path: str
    urls: tuple[str, ...]
    checksum: str
    optional: bool = False

    @property
    def algorithm(self) -> str:
        return checksum_algorithm(self.checksum)


def checksum_algorithm(checksum: str) -> str:
    """md5, sha1 or sha256 by the length of the hex digest."""
    algorithm = {32: "md5", 40: "sha1", 64: "sha256"}.get(len(checksum))
    if algorithm is None or not re.fullmatch(r"[0-9a-f]+", checksum):
        raise ValueError(f"checksum {checksum!r} is not a lower-case hex md5, sha1 or sha256 digest "
                         "(32, 40 or 64 digits)")
    return algorithm


_STATIC = {
    "gtzan_ff": (
        Asset("GTZAN", "gtzan_ff/genres.tar.gz", (
            "http://opihi.cs.uvic.ca/sound/genres.tar.gz",  # dead since ~2022
            "https://web.archive.org/web/20211207012050/http://opihi.cs.uvic.ca/sound/genres.tar.gz",
        ), "24347e0223d2ba798e0a558c4c172d9d4a19c00bb7963fe055d183dadb4ef2c6"),
        Asset("GTZAN_TRAIN", "gtzan_ff/train_filtered.txt", (f"{_DNN_MGR}/train_filtered.txt",),
              "2b04966cef1486f1a7767b74271533fa23e220388db804a1937835e1fc4fa3fa"),
        Asset("GTZAN_VALID", "gtzan_ff/valid_filtered.txt", (f"{_DNN_MGR}/valid_filtered.txt",),
              "f8fbee7c52397a0e0f3a91dc54fedecb2e27f5bdc9a9daeab8cb10d077e26956"),
        Asset("GTZAN_TEST", "gtzan_ff/test_filtered.txt", (f"{_DNN_MGR}/test_filtered.txt",),
              "09cafa6a89ce0a27f30ed250d56ecb4d03c22fffb5a693f96c7ae655ee02ac72"),
    ),
    "magnatagatune": (
        Asset("MAGNATAGATUNE_MP3_001", "magnatagatune/mp3.zip.001", (f"{_MTT}/mp3.zip.001",),
              "f857fe185968773058cc71662c2ef5d8f2d4b7338e3c122cfd52f82dcb9760b9"),
        Asset("MAGNATAGATUNE_MP3_002", "magnatagatune/mp3.zip.002", (f"{_MTT}/mp3.zip.002",),
              "fc2e1ec441755556ed1398b1808f1b08b6034372f8bc27394510c0c58cdb52ce"),
        Asset("MAGNATAGATUNE_MP3_003", "magnatagatune/mp3.zip.003", (f"{_MTT}/mp3.zip.003",),
              "83a689824c17e82f6eb81cdbc4e4ca239a4cfc1fb41f1a5c80b861caec90450f"),
        Asset("MAGNATAGATUNE_CLIP_METADATA", "magnatagatune/clip_info_final.csv", (f"{_MTT}/clip_info_final.csv",),
              "cb6108a10d3a91f0bfd7d2fbec2382559d15f20c8d28093f14e12162a47a3e78"),
        Asset("MAGNATAGATUNE_ANNOTATIONS", "magnatagatune/annotations_final.csv", (f"{_MTT}/annotations_final.csv",),
              "99b94e95825d4fa576386a5367b9c96e0ec636e9f9c240aceb492f4728f68c3c"),
    ),
    "emomusic": (
        Asset("EMOMUSIC_CLIPS", "emomusic/clips_45sec.tar.gz", (f"{_EMO}/clips_45sec.tar.gz",),
              "3994a5d5fefc27f9540d1a69cd7f1294c68e6cb311ce49765021e2e9c7a1057b"),
        Asset("EMOMUSIC_ANNOTATIONS", "emomusic/annotations.tar.gz", (f"{_EMO}/annotations.tar.gz",),
              "e0cb0b06e1b0ce7f04b1572fc410937699b7fad9dae67ddaa745f06cda4b0b33"),
        Asset("EMOMUSIC_MANUAL", "emomusic/dataset_manual.pdf", (f"{_EMO}/dataset_manual.pdf",),
              "2bfc7f7cc58ac22283f54593ed5104a8210972fa182c1aca1da478e0dae77d44", optional=True),
    ),
    "giantsteps_clips": (
        Asset("GIANTSTEPS_MTG_KEY_ANNOTATIONS", "giantsteps_clips/giantsteps-mtg-key-dataset.zip",
              (f"https://github.com/GiantSteps/giantsteps-mtg-key-dataset/archive/{GIANTSTEPS_ARCHIVES['GIANTSTEPS_MTG_KEY_ANNOTATIONS'][1]}.zip",),
              "c754c3fabbc0bf275d399028e212fa2c9c6680084bd003e3a283ae7b3ea22996"),
        Asset("GIANTSTEPS_KEY_ANNOTATIONS", "giantsteps_clips/giantsteps-key-dataset.zip",
              (f"https://github.com/GiantSteps/giantsteps-key-dataset/archive/{GIANTSTEPS_ARCHIVES['GIANTSTEPS_KEY_ANNOTATIONS'][1]}.zip",),
              "7749bee0f919b0f53db2c540fa6707f322b82a5d140e453f10f9af7875ad5bb8"),
    ),
}


#: jukemir's pre-computed representations (its step "123"): one archive of `<uid>.npy` vectors per
#: dataset and representation, sha256 as jukemir/assets/precomputed.json lists them. Their host
#: has been dead since late 2023 (jukemir issue 15): copies come through --mirror / --url.
PRECOMPUTED_REPRESENTATIONS = ("chroma", "mfcc", "choi", "musicnn", "clmr", "jukebox")
_PRECOMPUTED_HOST = "https://nlp.stanford.edu/data/cdonahue/jukemir/precomputed"
_PRECOMPUTED_SHA256 = {
    ("emomusic", "choi"): "17d23d7211bd8513bcc6ed4d62cf819389030a3cc786c39e93c3e37df19fcfdc",
    ("emomusic", "chroma"): "cbe6faaa56309450103888442ab144d0f2fbc43f35fd0a1ed807bf27d6b6df5a",
    ("emomusic", "clmr"): "5b4d19dba824b8fe7f44025657cfd441fabd12c091aab0119d2f9b885f7acc2c",
    ("emomusic", "jukebox"): "bff3a148eb15c60308629e3a1e2593b9d34324bb9404a49f98c44854ea3aeb5e",
    ("emomusic", "mfcc"): "c0d6a45f5d0279e4f296921c2fd64425a1b9bfd9baee751c8809a67a484d5589",
    ("emomusic", "musicnn"): "80e09ec228b5a032f813937a59b7bc99775b92af225e42af428cd395ac9b57c9",
    ("giantsteps_clips", "choi"): "ad5286f1eedd978720d20ceadff281ec284a030d217a2f5be011ebf7b7265b49",
    ("giantsteps_clips", "chroma"): "2928549df97d4c594a7be14b8b40b68c31120b42eb0c208860ca113ab6d2aae1",
    ("giantsteps_clips", "clmr"): "152e7d33c96a531ee606181690010878c386c079901b6484e1d666813d5ed340",
    ("giantsteps_clips", "jukebox"): "ac25a9c900865482ad1cb5b7d8d8208935491c7134690f8bd530dc660898bee2",
    ("giantsteps_clips", "mfcc"): "61d6df264266ba03d27517dba0cbae50904a2d093f9b6c7cc675220311734156",
    ("giantsteps_clips", "musicnn"): "a837b0a4030df83fd46ae5ed9f4871f6c4fe3d3cfbed2b951b3225a893b98fe6",
    ("gtzan_ff", "choi"): "7b6ee4d2cf368a5d5006a4fd1af3f6176bae5d1cf665fac06c8cd0ffb0529d4e",
    ("gtzan_ff", "chroma"): "2a95d7ba03f8b4a500b1a2e38f9449069b449fc68a2ca13a35a94edf2d5f5e8e",
    ("gtzan_ff", "clmr"): "fe4de733f91c94a1fe2900ee989602c0463a29a8ad3276c21b077a1bff32fa81",
    ("gtzan_ff", "jukebox"): "d3d619b907f84069faada1fd81edede6518e11bbb90c3d3f75785b9c48f472c8",
    ("gtzan_ff", "mfcc"): "13d8fe30ae20cec7dc91363a8f2b55a5f6c1b60091d2349eefdf33e217b66169",
    ("gtzan_ff", "musicnn"): "3a72e7dfca03ab4aa5eaa6a875d7962225ea1f61f715a1335cf98aee493ce0ff",
    ("magnatagatune", "choi"): "5c7c72f2ec12ad609e6cc31ecf06872e6f6d82d492a40ec578f44fc6c6ddf078",
    ("magnatagatune", "chroma"): "4725c13fd25b9b3fdbd59f73c0637b882486a340283a80ab8649a9a64d0a3313",
    ("magnatagatune", "clmr"): "a69ad2f3f462915f00519cdc160dde94f46b9cc190f0391525957f2547e04e67",
    ("magnatagatune", "jukebox"): "2547b4d5c6b85bad1de12c6280c704e1183b6740c07316d0f08325b95f966d40",
    ("magnatagatune", "mfcc"): "3d2f95a221478873be34d5f00ede38ce50b1707d322838831aeff8f0c00800d5",
    ("magnatagatune", "musicnn"): "3b87e35f5774e30ff6d8932f9a7e41cfe07b8d7542866fddd70660a8869b8643",
}
#: Where the archives go, under the datasets root.
PRECOMPUTED_FOLDER = "precomputed"


def precomputed_asset(dataset: str, representation: str) -> Asset:
    """The archive of jukemir's pre-computed `representation` of `dataset`."""
    try:
        checksum = _PRECOMPUTED_SHA256[dataset, representation]
    except KeyError:
        raise ValueError(f"jukemir published no pre-computed {representation!r} of {dataset!r}; it has "
                         f"{', '.join(PRECOMPUTED_REPRESENTATIONS)} of {', '.join(DATASETS)}") from None
    name = f"{dataset}-{representation}.tar.gz"
    return Asset(f"PRECOMPUTED_{dataset.upper()}_{representation.upper()}", f"{PRECOMPUTED_FOLDER}/{name}",
                 (f"{_PRECOMPUTED_HOST}/{name}",), checksum)


def static_assets(dataset: str) -> tuple[Asset, ...]:
    """The assets of `dataset` known before anything is downloaded."""
    if dataset not in _STATIC:
        raise ValueError(f"unknown dataset {dataset!r}; the registry has {', '.join(DATASETS)}")
    return _STATIC[dataset]


def asset(tag: str) -> Asset:
    """The static asset with this tag."""
    for assets in _STATIC.values():
        for a in assets:
            if a.tag == tag:
                return a
    raise KeyError(f"no asset tagged {tag!r}")


def all_static_tags() -> dict[str, str]:
    """Every static asset tag (the pre-computed archives' included), with the dataset it belongs to."""
    tags = {a.tag: dataset for dataset, assets in _STATIC.items() for a in assets}
    tags.update({precomputed_asset(d, r).tag: d for d, r in _PRECOMPUTED_SHA256})
    return tags


#: Tags of the GiantSteps MP3s (`giantsteps_audio_assets`), known only once the archives are in.
GIANTSTEPS_AUDIO_TAG = re.compile(r"GIANTSTEPS_(?:MTG_)?KEY_\d+")
#: The schemes urllib downloads from.
URL_SCHEMES = ("http", "https", "ftp", "file")


def url_problem(url: str) -> str | None:
    """Why `url` is no URL to download from (None when it is one)."""
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in URL_SCHEMES:
        return f"{url!r} is not a URL: it must start with {', '.join(s + '://' for s in URL_SCHEMES)}"
    if parts.scheme.lower() != "file" and not parts.hostname:
        return f"{url!r} names no host (expected e.g. https://host/path)"
    return None


def tag_problem(tag: str, dataset: str, tags: Collection[str]) -> str | None:
    """Why `tag` names none of `dataset`'s assets (whose tags are `tags`), with the closest
    valid tags; None when it names one."""
    if tag in tags or (dataset == "giantsteps_clips" and GIANTSTEPS_AUDIO_TAG.fullmatch(tag)):
        return None
    owner = all_static_tags().get(tag)
    if owner is not None:
        return f"{tag} is an asset of {owner}, not of {dataset}"
    valid = sorted(tags)
    if dataset == "giantsteps_clips":
        valid += ["GIANTSTEPS_MTG_KEY_<track id>", "GIANTSTEPS_KEY_<track id>"]
    close = difflib.get_close_matches(tag.upper(), valid, n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    return f"{dataset} has no asset tagged {tag!r}; {hint}its tags: {', '.join(valid)}"


def env_url_overrides() -> dict[str, tuple[str, str]]:
    """The `TUNEMIR_URL_<TAG>` variables set (non-empty): tag -> (variable, URL)."""
    return {name[len(URL_ENV_PREFIX):]: (name, value) for name, value in os.environ.items()
            if name.startswith(URL_ENV_PREFIX) and value.strip()}


class OverrideError(ValueError):
    """A `--url`, `--mirror`, `TUNEMIR_URL_<TAG>` or `TUNEMIR_DATA_MIRROR` value that cannot
    work; `source` is the option (`--url`) or variable (`$TUNEMIR_URL_GTZAN`) at fault."""

    def __init__(self, source: str, message: str):
        super().__init__(message)
        self.source = source


def _variable_error(name: str, problem: str) -> OverrideError:
    return OverrideError(f"${name}", f"${name}: {problem}. Fix the variable or unset it (`unset {name}`).")


def parse_url_overrides(dataset: str, items: Collection[str], tags: Collection[str]) -> dict[str, str]:
    """`--url TAG=URL` values as {TAG: URL}; each TAG must be one of `dataset`'s assets (`tags`),
    given once, with a URL."""
    overrides: dict[str, str] = {}
    for item in items:
        tag, sep, url = (part.strip() for part in item.partition("="))
        if not sep or not tag or not url:
            raise OverrideError("--url", f"{item!r}: expected TAG=URL, e.g. --url GTZAN=https://host/genres.tar.gz")
        problem = tag_problem(tag, dataset, tags) or url_problem(url)
        if problem:
            raise OverrideError("--url", f"{item!r}: {problem}")
        if tag in overrides:
            raise OverrideError("--url", f"{tag} is given twice ({overrides[tag]} and {url}); keep one")
        overrides[tag] = url
    return overrides


def check_track_overrides(overrides: Collection[str], audio: Collection[Asset]) -> None:
    """Refuse `--url` tags of GiantSteps tracks that the (now verified) archives do not list."""
    tracks = {a.tag for a in audio}
    for tag in sorted(t for t in overrides if GIANTSTEPS_AUDIO_TAG.fullmatch(t) and t not in tracks):
        raise OverrideError("--url", f"{tag}: the annotation archives list no such track (they list {len(tracks)} "
                                     f"MP3s, e.g. {', '.join(sorted(tracks)[:3])}); fix the tag")


def check_env_overrides(dataset: str, tags: Collection[str], registry_tags: Collection[str] = ()) -> None:
    """Refuse a `TUNEMIR_URL_<TAG>` that names no asset at all (a typo would be ignored
    silently), or names one of `dataset`'s assets (`tags`) but holds no URL. Variables for
    other datasets' assets are left alone; `WEIGHTS_<MODEL>` ones are `tunemir weights fetch`'s."""
    known = set(all_static_tags()) | set(registry_tags)
    for tag, (name, url) in sorted(env_url_overrides().items()):
        if tag.startswith("WEIGHTS_"):
            continue
        mine = tag in tags or (dataset == "giantsteps_clips" and GIANTSTEPS_AUDIO_TAG.fullmatch(tag))
        if not mine and (tag in known or GIANTSTEPS_AUDIO_TAG.fullmatch(tag)):
            continue  # another dataset's asset: this command does not fetch it
        if mine:
            problem = url_problem(url)
        else:
            close = difflib.get_close_matches(tag.upper(), sorted(known), n=3, cutoff=0.5)
            problem = f"no dataset has an asset tagged {tag!r}" + (
                f" (did you mean {' or '.join(URL_ENV_PREFIX + c for c in close)}?)" if close else
                f" ({dataset}'s tags: {', '.join(sorted(tags))})")
        if problem:
            raise _variable_error(name, problem)


def check_weights_env_overrides(tags: Collection[str]) -> None:
    """Refuse a `TUNEMIR_URL_WEIGHTS_<MODEL>` whose model is not one of `tags` or whose value is no URL."""
    for tag, (name, url) in sorted(env_url_overrides().items()):
        if tag.startswith("WEIGHTS_"):
            problem = url_problem(url) if tag in tags else (
                "no model has released weights under that name; the variables are "
                f"{', '.join(sorted(URL_ENV_PREFIX + t for t in tags))}")
            if problem:
                raise _variable_error(name, problem)


def check_mirror(mirror: str | None = None) -> None:
    """Refuse a `--mirror` (else `$TUNEMIR_DATA_MIRROR`) that is not a URL."""
    if mirror:
        if url_problem(mirror):
            raise OverrideError("--mirror", f"{url_problem(mirror)}; pass the base URL the files are served under")
    elif os.environ.get(MIRROR_ENV, "").strip() and url_problem(os.environ[MIRROR_ENV]):
        raise _variable_error(MIRROR_ENV, f"{url_problem(os.environ[MIRROR_ENV])}; set it to the base URL the "
                                          "files are served under")


_MD5_NAME = re.compile(r"(?:^|/)md5/0*(\d+)\.LOFI\.md5$")


def giantsteps_audio_assets(datasets_root: Path) -> tuple[Asset, ...]:
    """One asset per GiantSteps MP3, its md5 read from the (already verified) annotation archive.

    Tags follow jukemir (`GIANTSTEPS_MTG_KEY_<id>` for the train/valid songs, `GIANTSTEPS_KEY_<id>`
    for the test songs); files go to `giantsteps_clips/audio/<id>.LOFI.mp3`.
    """
    out = []
    for archive_tag, (_, _, backup) in GIANTSTEPS_ARCHIVES.items():
        prefix = archive_tag.removesuffix("ANNOTATIONS")
        with zipfile.ZipFile(datasets_root / asset(archive_tag).path) as archive:
            for name in sorted(archive.namelist()):
                match = _MD5_NAME.search(name)
                if match:
                    track = int(match.group(1))
                    checksum = archive.read(name).decode().split()[0].lower()
                    out.append(Asset(f"{prefix}{track}", f"giantsteps_clips/audio/{track}.LOFI.mp3",
                                     (f"{_JKU}/{backup}/{track}.LOFI.mp3",), checksum))
    return tuple(out)


def candidate_urls(a: Asset, overrides: dict[str, str] | None = None, mirror: str | None = None) -> list[str]:
    """The URLs to try for `a`, best first: a per-asset override (argument, else the
    `TUNEMIR_URL_<TAG>` variable), then `<mirror>/<path>` (argument, else `$TUNEMIR_DATA_MIRROR`),
    then the registry's own URLs."""
    urls = []
    override = (overrides or {}).get(a.tag) or os.environ.get(URL_ENV_PREFIX + a.tag)
    if override:
        urls.append(override)
    mirror = mirror or os.environ.get(MIRROR_ENV)
    if mirror:
        urls.append(f"{mirror.rstrip('/')}/{a.path}")
    urls += [u for u in a.urls if u not in urls]
    return urls
