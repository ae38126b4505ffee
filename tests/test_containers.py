"""The images and their orchestration, checked without a Docker engine: the Dockerfiles lint
clean, the compose file is valid and wired as intended, every image's command runs natively,
the weights step does what the build does, and .dockerignore keeps the right files."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import posixpath
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import click
import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from tunemir.audio import FRAME_LENGTH, SAMPLE_RATE
from tunemir.checkpoints import read_encoder_weights
from tunemir.cli import main
from tunemir.testing import TINY_CONFIGS, dev_tool, save_tiny_checkpoint, write_audio, write_released_weights
from tunemir.weights import read_pin, release

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILES = sorted([*ROOT.glob("containers/*/Dockerfile"), ROOT / "probe" / "Dockerfile"])
EXTRACTORS = ["tune", "tune_plus", "clmr", "musicnn"]


def tool(name: str) -> str:
    """A console script of the dev extra; skip if absent."""
    found = dev_tool(name)
    if not found:
        pytest.skip(f"{name} is not installed (pip install -e '.[dev]' provides it)")
    return found


# --- a Dockerfile reader: instructions, ARG defaults, FROM, exec-form ENTRYPOINT/CMD ----------

@dataclasses.dataclass
class Dockerfile:
    path: Path
    instructions: list[tuple[str, str]]  # (KEYWORD, arguments), continuation lines joined

    @classmethod
    def read(cls, path: Path) -> Dockerfile:
        instructions, pending = [], []
        for line in path.read_text().splitlines():
            line = line.strip()
            if line.startswith("#"):  # comments and parser directives, also inside a continuation
                continue
            pending.append(line.removesuffix("\\").strip())
            if line.endswith("\\"):
                continue
            text, pending = " ".join(pending).strip(), []
            if text:
                keyword, _, rest = text.partition(" ")
                instructions.append((keyword.upper(), rest.strip()))
        return cls(path, instructions)

    def all(self, keyword: str) -> list[str]:
        return [rest for kw, rest in self.instructions if kw == keyword]

    def args(self) -> dict[str, str]:
        """ARG defaults (quotes removed), as the RUN steps see them without --build-arg."""
        out = {}
        for rest in self.all("ARG"):
            name, _, value = rest.partition("=")
            out[name] = shlex.split(value)[0] if value.strip() else ""
        return out

    def base(self) -> str:
        (line,) = self.all("FROM")
        return re.sub(r"\$\{?(\w+)\}?", lambda m: self.args()[m[1]], line.split()[0])

    def exec_form(self, keyword: str) -> list[str] | None:
        values = self.all(keyword)
        if not values:
            return None
        value = json.loads(values[-1])
        assert isinstance(value, list) and all(isinstance(v, str) for v in value), f"{self.path}: {keyword} is not exec form"
        return value


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def images() -> dict[str, Path]:
    """Image name -> its Dockerfile, from the compose file's builds."""
    return {s["image"]: ROOT / s["build"].get("context", ".") / s["build"]["dockerfile"]
            for s in compose()["services"].values() if "build" in s}


def resolved(path: Path) -> tuple[list[str] | None, list[str] | None, str | None]:
    """(ENTRYPOINT, CMD, USER) of the image `path` builds, inherited through FROM from the
    images the compose file builds. An ENTRYPOINT set in a child resets the inherited CMD."""
    dockerfile = Dockerfile.read(path)
    parent = images().get(dockerfile.base())
    entrypoint, cmd, user = resolved(parent) if parent else (None, None, None)
    if dockerfile.exec_form("ENTRYPOINT") is not None:
        entrypoint, cmd = dockerfile.exec_form("ENTRYPOINT"), None
    if dockerfile.exec_form("CMD") is not None:
        cmd = dockerfile.exec_form("CMD")
    return entrypoint, cmd, (dockerfile.all("USER") or [user])[-1]


def command(path: Path) -> list[str]:
    """What `docker run IMAGE` executes: ENTRYPOINT + CMD."""
    entrypoint, cmd, _ = resolved(path)
    return (entrypoint or []) + (cmd or [])


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Compose's `${VAR}` / `${VAR:-default}` interpolation."""
    env = env or {}
    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", lambda m: env.get(m[1]) or (m[2] or ""), value)


def volume_targets(service: dict) -> dict[str, str]:
    """Container path -> host source of a service's short-syntax volumes."""
    out = {}
    for spec in service.get("volumes", []):
        match = re.fullmatch(r"(.+):(/[^:]*)(?::(ro|rw))?", spec)
        assert match, spec
        out[match[2]] = match[1]
    return out


# --- 1. hadolint ----------------------------------------------------------------------------

def test_dockerfiles_are_found():
    names = {p.relative_to(ROOT).as_posix() for p in DOCKERFILES}
    assert {"containers/base/Dockerfile", "containers/trainer/Dockerfile", "probe/Dockerfile",
            *(f"containers/{m}/Dockerfile" for m in EXTRACTORS)} <= names


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_hadolint_reports_nothing(path: Path):
    result = subprocess.run([tool("hadolint"), "--no-color", str(path)], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout == "" and result.stderr == "", result.stdout + result.stderr
    # An inline ignore must say why, on a comment line of its own just above it.
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore" in line:
            assert i > 0 and lines[i - 1].startswith("#") and "hadolint" not in lines[i - 1], f"{path}:{i + 1}"


# --- 2. the compose file --------------------------------------------------------------------

def test_compose_file_matches_the_compose_spec():
    result = subprocess.run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def gpu_reserved(service: dict, count: str = "all", env: dict[str, str] | None = None) -> bool:
    """Whether `service` reserves `count` NVIDIA GPUs (with the environment `env`)."""
    devices = service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    return any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", [])
               and str(interpolate(str(d.get("count", "all")), env)) == count for d in devices)


def test_compose_builds_every_image_on_the_base_service():
    services = compose()["services"]
    base = services["base"]
    assert base["image"] == "tunemir/base"
    assert (ROOT / base["build"].get("context", ".") / base["build"]["dockerfile"]).is_file()
    for name, service in services.items():
        build = service.get("build")
        if build is None or name == "base":
            continue
        dockerfile = ROOT / build.get("context", ".") / build["dockerfile"]
        assert dockerfile.is_file(), f"{name}: {dockerfile}"
        assert build.get("context", ".") == base["build"].get("context", "."), name
        # FROM ${BASE_IMAGE}: the base service's image, for compose and a plain `docker build`
        # alike. A `service:base` context would make Compose rebuild base before every `up` and
        # `run`, which an engine without BuildKit cannot (podman: .ci/images.sh).
        assert build["args"]["BASE_IMAGE"] == base["image"], name
        assert not any(str(v).startswith("service:") for v in build.get("additional_contexts", {}).values()), name
        parsed = Dockerfile.read(dockerfile)
        assert parsed.all("FROM") == ["${BASE_IMAGE}"], name
        assert parsed.base() == base["image"], name


def test_compose_services_are_wired_as_documented():
    services = compose()["services"]
    # `docker compose up` starts only what has no profile: the base (prints its version and
    # exits) and the trainer; nothing depends on another service at run time.
    assert {n for n, s in services.items() if not s.get("profiles")} == {"base", "trainer"}
    assert services["base"].get("command") == ["--version"] and "deploy" not in services["base"]
    assert not any("depends_on" in s for s in services.values())

    trainer = services["trainer"]
    # One GPU by default, the one device configs/paper.yaml trains on; more when asked.
    assert trainer["image"] == "tunemir/trainer" and gpu_reserved(trainer, "1")
    assert gpu_reserved(trainer, "4", {"TUNEMIR_GPU_COUNT": "4"}) and trainer["shm_size"]
    assert "command" not in trainer  # the paper recipe unless arguments are given
    volumes = volume_targets(trainer)
    assert interpolate(volumes["/cache"]) == "~/.tunemir"
    assert interpolate(volumes["/workspace/runs"]) == "./runs"
    assert interpolate(volumes["/cache"], {"TUNEMIR_CACHE_DIR": "/data/tm"}) == "/data/tm"
    assert trainer["environment"]["TUNEMIR_CACHE_DIR"] == "/cache"
    assert re.fullmatch(r"\d+[gG][bB]?", str(trainer["shm_size"]))

    for model in EXTRACTORS:
        service = services[model]
        assert service["profiles"] == ["extract"] and gpu_reserved(service), model
        assert service["image"] == f"tunemir/representations_{model}"
        assert service["build"]["dockerfile"] == f"containers/{model}/Dockerfile"
        volumes = volume_targets(service)
        assert set(volumes) == {"/input", "/output"} and service["volumes"][0].endswith(":/input:ro")


def test_probe_service_runs_the_reproduce_probe_stage():
    probe = compose()["services"]["probe"]
    assert probe["image"] == "tunemir/probe" and gpu_reserved(probe)
    assert "/cache" in volume_targets(probe)
    environment = dict(e.partition("=")[::2] if "=" in e else (e, None) for e in probe["environment"])
    assert environment["TUNEMIR_RUNNER"] == "native" and environment["TUNEMIR_CACHE_DIR"] == "/cache"
    for name in ("TUNEMIR_DATASETS", "TUNEMIR_REPRESENTATIONS", "TUNEMIR_GRID"):
        assert environment[name] is None, f"{name} passes through (unset stays unset)"
    shell, flag, script = probe["entrypoint"]
    assert shell in ("bash", "sh") and flag == "-c"
    steps = re.findall(r"/opt/tunemir/reproduce/([\w.-]+)", script)
    assert [s.split("_")[0] for s in steps] == ["4", "5", "6"]
    assert script.count("&&") == 2  # a failed stage stops the rest
    # The base image puts reproduce/ where the service runs it.
    copies = Dockerfile.read(ROOT / "containers/base/Dockerfile").all("COPY")
    assert any(c.split()[-2:] == ["reproduce", "/opt/tunemir/reproduce"] for c in copies)
    if not (ROOT / "reproduce").is_dir():
        pytest.skip("reproduce/ is not in this checkout yet")
    for step in steps:
        assert (ROOT / "reproduce" / step).is_file(), step


# --- 3. each image's command, run natively --------------------------------------------------

def test_every_image_runs_tunemir_as_a_user():
    for path in DOCKERFILES:
        argv = command(path)
        assert argv and argv[0] == "tunemir", f"{path}: {argv}"
        user = resolved(path)[2]
        assert user and user.split(":")[0] not in ("root", "0"), f"{path}: USER {user}"


def test_base_and_probe_commands_work():
    for path, expected in [(ROOT / "containers/base/Dockerfile", ["tunemir", "--help"]),
                           (ROOT / "probe/Dockerfile", ["tunemir", "probe", "--help"])]:
        argv = command(path)
        assert argv == expected
        result = CliRunner().invoke(main, argv[1:])
        assert result.exit_code == 0, result.output


def test_trainer_command_is_the_paper_recipe():
    argv = command(ROOT / "containers/trainer/Dockerfile")
    assert argv == ["tunemir", "train", "--resume", "auto"]  # a rerun continues the run
    result = CliRunner().invoke(main, [*argv[1:], "--print-config"])
    assert result.exit_code == 0, result.output
    config = yaml.safe_load(result.output)
    assert config["model"] == "tune_plus" and config["max_epochs"] == 10000
    assert config["output_dir"] == "runs/pretrain"  # under WORKDIR /workspace: the runs volume
    assert Dockerfile.read(ROOT / "containers/trainer/Dockerfile").all("WORKDIR")[-1] == "/workspace"


@pytest.mark.parametrize("model", EXTRACTORS)
def test_extractor_entrypoint_writes_one_shard(model: str, tmp_path: Path, monkeypatch):
    argv = command(ROOT / f"containers/{model}/Dockerfile")
    assert argv == ["tunemir", "extract", model, "/input", "/output"]
    weights = tmp_path / "weights"
    tiny = save_tiny_checkpoint(weights / f"{model}.safetensors", model, seed=1)
    monkeypatch.setenv("TUNEMIR_WEIGHTS_DIR", str(weights))
    for i in range(3):
        write_audio(tmp_path / "input" / f"{i}.wav", 3.0, SAMPLE_RATE, seed=i)
    paths = {"/input": str(tmp_path / "input"), "/output": str(tmp_path / "output")}
    result = CliRunner().invoke(main, [paths.get(a, a) for a in argv[1:]] + ["--batch_size", "2", "--batch_idx", "0"])
    assert result.exit_code == 0, result.output
    vectors = sorted((tmp_path / "output").rglob("*.npy"))
    assert [v.name for v in vectors] == ["0.npy", "1.npy"]
    dim = tiny.layer_dims[0]  # the output layer's width
    for path in vectors:
        vector = np.load(path)
        assert vector.shape == (dim,) and vector.dtype == np.float32 and np.isfinite(vector).all()


# --- 4. the weights step of the extractor images ------------------------------------------

@dataclasses.dataclass
class WeightsStep:
    """An extractor Dockerfile's `RUN --mount=type=bind,... tunemir weights fetch ...`."""
    model: str
    mount: dict[str, str]
    shell: str
    build_args: dict[str, str]

    @classmethod
    def of(cls, model: str) -> WeightsStep:
        dockerfile = Dockerfile.read(ROOT / f"containers/{model}/Dockerfile")
        (run,) = [r for r in dockerfile.all("RUN") if "tunemir weights fetch" in r]
        flags = re.match(r"((?:--\S+\s+)*)(.*)", run, re.S)
        mounts = [f for f in flags[1].split() if f.startswith("--mount=")]
        assert len(mounts) == 1, run
        mount = dict(kv.split("=", 1) for kv in mounts[0].removeprefix("--mount=").split(","))
        return cls(model, mount, flags[2], dockerfile.args())

    def argv(self, folder: Path, **build_args: str) -> list[str]:
        """The arguments `tunemir` gets, expanded by a real POSIX shell as in the build (build args
        are environment variables there), with the bind mount's target mapped to `folder`."""
        script = 'tunemir() { for a in "$@"; do printf "%s\\0" "$a"; done; }\n' + self.shell
        env = {"PATH": os.environ["PATH"], **self.build_args, **build_args}
        out = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, check=True).stdout
        target = self.mount["target"].rstrip("/")
        return [str(folder) + a[len(target):] if a == target or a.startswith(target + "/") else a
                for a in out.split("\0")[:-1]]


def parse(argv: list[str]) -> click.Context:
    """Click's parse of `tunemir ARGV` down to the subcommand, types and paths checked."""
    command, ctx, args = main, None, list(argv)
    while isinstance(command, click.Group):
        ctx = click.Context(command, info_name=args[0] if ctx else "tunemir", parent=ctx)
        name = args.pop(0)
        command = command.get_command(ctx, name)
        assert command is not None, f"no command {name!r} in {argv}"
    return command.make_context(name, args, parent=ctx)


def option(ctx: click.Context, flag: str):
    """The parsed value of the option spelled `flag` (the Dockerfiles name options, not params)."""
    (param,) = [p for p in ctx.command.params if flag in p.opts]
    return ctx.params[param.name]


@pytest.mark.parametrize("model", EXTRACTORS)
def test_weights_step_matches_the_entrypoint(model: str):
    step = WeightsStep.of(model)
    assert step.mount["type"] == "bind" and step.mount["source"] == f"containers/{model}"
    assert (ROOT / step.mount["source"] / "weights.sha256").is_file()
    folder_release = release(model).is_folder  # pinned file by file: a pin file, no URL or sha256
    expected_args = {"PIN_FILE"} if folder_release else {"WEIGHTS_URL", "WEIGHTS_SHA256"}
    assert set(step.build_args) >= expected_args
    if folder_release:
        assert step.build_args["PIN_FILE"] == "weights.sha256"
    else:
        assert not step.build_args["WEIGHTS_URL"] and not step.build_args["WEIGHTS_SHA256"]

    argv = step.argv(ROOT / step.mount["source"])
    extracted = command(ROOT / f"containers/{model}/Dockerfile")[2]
    assert argv[:3] == ["weights", "fetch", extracted] and extracted == model
    assert "--url" not in argv and "--sha256" not in argv  # unset build args add nothing
    ctx = parse(argv)
    assert Path(option(ctx, "--pin-file")) == ROOT / step.mount["source"] / "weights.sha256"
    assert [Path(p) for p in option(ctx, "--search-dir")] == [ROOT / step.mount["source"]]

    if folder_release:  # another pin file of the folder (what CI's test weights use)
        ctx = parse(step.argv(ROOT / step.mount["source"], PIN_FILE="ci/pins 2.sha256"))
        assert Path(option(ctx, "--pin-file")) == ROOT / step.mount["source"] / "ci" / "pins 2.sha256"
        return
    url, digest = "https://mirror.example/w eights.zip", "ab" * 32
    argv = step.argv(ROOT / step.mount["source"], WEIGHTS_URL=url, WEIGHTS_SHA256=digest)
    assert argv[argv.index("--url") + 1] == url and argv[argv.index("--sha256") + 1] == digest
    ctx = parse(argv)
    assert list(option(ctx, "--url")) == [url] and option(ctx, "--sha256") == digest


@pytest.mark.parametrize("model", EXTRACTORS)
def test_pin_file_pins_nothing_yet_and_names_the_release(model: str):
    pin_file = ROOT / f"containers/{model}/weights.sha256"
    text = pin_file.read_text()
    assert all(line.startswith("#") for line in text.splitlines() if line.strip())
    rel = release(model)
    assert rel.filename in text and rel.page in text and f"containers/{model}/" in text
    assert read_pin(pin_file, rel.filename) is None


@pytest.mark.parametrize("model", EXTRACTORS)
@pytest.mark.parametrize("pinned_by", ["pin-file", "build-arg", "nothing", "another-file"])
def test_weights_step_converts_only_a_pinned_release(model: str, pinned_by: str, tmp_path: Path, monkeypatch):
    step = WeightsStep.of(model)
    rel = release(model)
    context = tmp_path / "context"  # containers/<model>/ with the released file (or folder) put into it
    shutil.copytree(ROOT / step.mount["source"], context)
    path, tiny = write_released_weights(context, model, seed=7)
    files = [path / name for name, _ in rel.files] if rel.is_folder else [path]  # what is pinned
    digests = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    build_args = {}
    if pinned_by in ("pin-file", "another-file") or (pinned_by == "build-arg" and rel.is_folder):
        pin_file = context / ("weights.sha256" if pinned_by != "build-arg" else "ci/pins.sha256")
        pin_file.parent.mkdir(exist_ok=True)
        with open(pin_file, "a") as pins:  # what `sha256sum FILE >> ...` appends
            for f, digest in zip(files, digests):
                pinned = digest if pinned_by != "another-file" else hashlib.sha256(b"another file").hexdigest()
                pins.write(f"{pinned}  {f.relative_to(context.parent)}\n")
        if pinned_by == "build-arg":  # a folder's pins come in another pin file (PIN_FILE)
            build_args["PIN_FILE"] = "ci/pins.sha256"
    elif pinned_by == "build-arg":
        build_args["WEIGHTS_SHA256"] = digests[0]
    monkeypatch.setenv("TUNEMIR_WEIGHTS_DIR", str(tmp_path / "weights"))
    umask = os.umask(0o022)  # a build step's umask
    try:
        result = CliRunner().invoke(main, step.argv(context, **build_args))
    finally:
        os.umask(umask)
    output = tmp_path / "weights" / f"{model}.safetensors"
    if pinned_by in ("nothing", "another-file"):  # the build stops: nothing unchecked is converted
        # (a folder release's own pins, git blob ids, do not match random weights either)
        assert result.exit_code != 0 and files[0].name in result.output and not output.exists()
        return
    assert result.exit_code == 0, result.output
    # Readable by every uid: the images are also run as `docker run -u "$(id -u):$(id -g)"`.
    assert output.stat().st_mode & 0o777 == 0o644
    weights = read_encoder_weights(output)
    assert weights.format == "tunemir" and weights.metadata["model"] == model
    recorded = weights.metadata["source"]["release"]  # the image records its release
    if rel.is_folder:
        assert recorded["pins"] == {f.name: f"sha256:{d}" for f, d in zip(files, digests)}
    else:
        assert recorded["sha256"] == digests[0]
    assert weights.metadata["config"] == json.loads(json.dumps(dataclasses.asdict(tiny.config)))
    for key, value in tiny.state_dict().items():
        assert torch.equal(weights.state_dict[key], value), key


# --- 5. .dockerignore ----------------------------------------------------------------------

def pattern_regex(pattern: str) -> re.Pattern:
    """Docker's pattern syntax as moby/patternmatcher compiles it: `*` and `?` stay within a
    path segment, `**` spans any number of segments (a trailing one: everything), `\\` escapes.
    Character classes are not used in this repository."""
    assert "[" not in pattern, f"this matcher has no character classes: {pattern}"
    regex, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            i += 3 if pattern.startswith("**/", i) else 2
            regex += ".*" if i >= len(pattern) else "(?:.*/)?"
        elif pattern[i] in "*?":
            regex, i = regex + ("[^/]*" if pattern[i] == "*" else "[^/]"), i + 1
        elif pattern[i] == "\\" and i + 1 < len(pattern):
            regex, i = regex + re.escape(pattern[i + 1]), i + 2
        else:
            regex, i = regex + re.escape(pattern[i]), i + 1
    return re.compile(regex)


def ignore_rules(text: str) -> list[tuple[bool, re.Pattern]]:
    """(re-includes?, regex) per pattern line, in order; patterns are relative to the root."""
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            pattern = posixpath.normpath(line.removeprefix("!").strip().lstrip("/"))
            rules.append((line.startswith("!"), pattern_regex(pattern)))
    return rules


def in_context(path: str, rules: list[tuple[bool, re.Pattern]] | None = None) -> bool:
    """Whether `path` (relative to the root) reaches the builder: the last rule matching the
    path or one of its parent folders decides; none matching keeps it."""
    if rules is None:
        rules = ignore_rules((ROOT / ".dockerignore").read_text())
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for include, regex in rules:
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            included = include
    return included


def test_dockerignore_matcher_follows_dockers_rules():
    rules = ignore_rules("*.wav\n**/*.ckpt\n!keep/*.ckpt\nruns\nd/?.py\n!runs/keep.txt\n/lead/**\n")
    for path, expected in [("a.wav", False), ("d/a.wav", True), ("x/y/z.ckpt", False), ("z.ckpt", False),
                           ("keep/z.ckpt", True), ("keep/deeper/z.ckpt", False), ("runs/a/b", False),
                           ("runs/keep.txt", True), ("d/a.py", False), ("d/ab.py", True),
                           ("lead/a/b", False), ("lead", True), ("other/runs", True)]:
        assert in_context(path, rules) == expected, path


def test_dockerignore_keeps_data_out_and_sources_in():
    for path in ["demo-output/x.wav", "runs/pretrain/a/last.ckpt", ".venv/bin/python", "some/dir/song.mp3",
                 "weights/tune.safetensors", ".git/HEAD", "tests/test_cli.py", "tunemir/__pycache__/cli.cpython-311.pyc",
                 "containers/tune/tune.safetensors", "output/song.npy"]:
        assert not in_context(path), path
    for path in ["tunemir/cli.py", "pyproject.toml", "README.md", "reproduce/3_extract.sh",
                 "containers/tune/weights.sha256", "containers/tune_plus/tune_plus_epoch_10000.ckpt",
                 "containers/tune/tune_5_tail_epoch_10000.ckpt", "containers/clmr/clmr_magnatagatune_mlp.zip",
                 "tunemir/datasets/metadata/magnatagatune.json.gz"]:
        assert in_context(path), path


def test_every_copied_and_mounted_file_is_in_the_build_context():
    for path in DOCKERFILES:
        dockerfile = Dockerfile.read(path)
        sources = [s for copy in dockerfile.all("COPY") for s in copy.split()[:-1] if not s.startswith("--")]
        sources += re.findall(r"--mount=\S*?source=([^,\s]+)", " ".join(dockerfile.all("RUN")))
        for source in map(posixpath.normpath, sources):
            assert in_context(source), f"{path}: {source}"
            # Everything a copied folder holds gets in, bar bytecode caches.
            for file in (ROOT / source).rglob("*") if (ROOT / source).is_dir() else []:
                relative = file.relative_to(ROOT).as_posix()
                if file.is_file() and "__pycache__" not in relative:
                    assert in_context(relative), f"{path}: {relative} (under {source})"


def test_shipped_paper_config_is_the_default_recipe():
    """configs/paper.yaml (mounted into the trainer) must not drift from `tunemir train`'s defaults."""
    from tunemir.pretrain.config import load_config

    assert load_config(ROOT / "configs" / "paper.yaml") == load_config()


def test_compose_services_run_as_tunemir_user():
    # Every service that mounts host folders runs as TUNEMIR_USER: the images' uid 1000 unless
    # set (.env), so that a host user of another uid can write and read its own folders.
    for name, service in compose()["services"].items():
        if not service.get("volumes"):
            continue
        assert interpolate(str(service.get("user", ""))) == "1000:1000", name
        assert interpolate(str(service["user"]), {"TUNEMIR_USER": "4321:100"}) == "4321:100", name
