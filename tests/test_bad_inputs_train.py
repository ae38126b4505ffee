"""Bad inputs of `tunemir train` and `tunemir evaluate linear`: every option out of range, YAML
and JSON problems, files that cannot be resumed, missing data. Each fails before any training
step (the guard below makes a training step fail the test), with a clean exit and a message
naming the option or file and the fix."""

import dataclasses
import json

import pytest
import torch

from tunemir.testing import TINY_CONFIGS, save_tiny_checkpoint, write_audio, write_processed_audio
from tunemir.testing.bad_inputs import BadInput, check_bad_input

TINY_CLMR = json.dumps({"channels": list(TINY_CONFIGS["clmr"].channels)})
TINY = ("--model", "clmr", "--encoder_config", TINY_CLMR)
# Options that keep a case that gets past the configuration inside its own folder, on the CPU.
LOCAL = ("--output_dir", "{tmp}/runs", "--audio_cache_dir", "{tmp}/cache", "--accelerator", "cpu",
         "--num_workers", "0", "--no-progress")


def train(*args: str) -> tuple[str, ...]:
    return ("train", *args)


def printed(*args: str) -> tuple[str, ...]:
    """`tunemir train ARGS --print-config`: only the configuration is resolved."""
    return ("train", *args, "--print-config")


def yaml_file(text: str | bytes):
    def setup(tmp):
        path = tmp / "cfg.yaml"
        (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return setup


def audio_folder(tmp):
    """Six 3-s clips: enough for a batch of 2, and quick to decode."""
    for i in range(6):
        write_audio(tmp / "audio" / f"clip{i}.wav", 3.0, 22050, seed=i)


def tunemir_checkpoint(tmp):
    """A checkpoint laid out as `tunemir train` writes it (a Lightning file: stored configuration,
    the module's state_dict, optimizer states), of a tiny CLMR."""
    from tunemir.pretrain.config import load_config
    from tunemir.pretrain.module import ContrastiveLearning

    config = load_config(overrides={"model": "clmr", "encoder_config": TINY_CLMR})
    module = ContrastiveLearning(config.to_dict())
    torch.save({"epoch": 0, "global_step": 1, "pytorch-lightning_version": "2.0.0", "state_dict": module.state_dict(),
                "optimizer_states": [], "lr_schedulers": [], "hyper_parameters": {"config": config.to_dict()}},
               tmp / "run.ckpt")


def released_checkpoint(tmp):
    """CLMR's released Lightning checkpoint format (another codebase's, no tunemir configuration)."""
    from tunemir.testing import write_released_weights

    path, _ = write_released_weights(tmp, "tune")
    return {"released": str(path)}


def processed(tmp):
    from tunemir.probe.tasks import BUILTIN_TASKS

    for name in ("magnatagatune", "emomusic"):
        write_processed_audio(tmp / "processed", name, BUILTIN_TASKS[name], {"train": 2, "valid": 2, "test": 2},
                              seconds=(2.8, 3.0), sample_rate=22050)


def nan_encoder(tmp):
    """A processed dataset and a tiny CLMR checkpoint whose weights hold a NaN."""
    from tunemir.checkpoints import save_checkpoint
    from tunemir.testing import tiny_model

    processed(tmp)
    state = tiny_model("clmr").state_dict()
    state["sequential.0.0.weight"][0, 0, 0] = float("nan")
    save_checkpoint(tmp / "nan.safetensors", state, model="clmr", config=dataclasses.asdict(TINY_CONFIGS["clmr"]))


def garbage(name: str, content: bytes = b"this is not a checkpoint\n"):
    def setup(tmp):
        (tmp / name).write_bytes(content)
    return setup


def safetensors_file(tmp):
    save_tiny_checkpoint(tmp / "tiny.safetensors", "clmr")


def audio_and_a_file(tmp):
    audio_folder(tmp)
    (tmp / "f").write_text("a file where the run folder would go\n")


def a_file(name: str):
    def setup(tmp):
        (tmp / name).write_text("a file\n")
    return setup


LINEAR = ("evaluate", "linear", "--datasets-dir", "{tmp}/processed", "--audio-cache-dir", "{tmp}/cache",
          "--output-dir", "{tmp}/out", "--device", "cpu")
SUPERVISED = (*LINEAR, "--supervised", "--model", "clmr")

CASES = [
    # --- options out of range (the command line) ---
    BadInput("model-unknown", train("--model", "foo"), ("--model", "clmr", "tune_plus")),
    BadInput("model-handcrafted", printed("--model", "chroma"), ("--model", "clmr")),
    BadInput("temperature-zero", printed("--temperature", "0"), ("--temperature", "greater than 0")),
    BadInput("temperature-negative", printed("--temperature", "-0.5"), ("--temperature", "greater than 0")),
    BadInput("temperature-nan", printed("--temperature", "nan"), ("--temperature", "finite")),
    BadInput("temperature-inf", printed("--temperature", "inf"), ("--temperature", "finite")),
    BadInput("learning-rate-zero", printed("--learning_rate", "0"), ("--learning_rate", "greater than 0")),
    BadInput("learning-rate-nan", printed("--learning-rate", "nan"), ("--learning_rate", "finite")),
    BadInput("learning-rate-word", printed("--learning_rate", "fast"), ("--learning_rate", "not a valid float")),
    BadInput("batch-size-one", printed("--batch_size", "1"), ("--batch_size", "at least 2", "negatives")),
    BadInput("batch-size-zero", printed("--batch_size", "0"), ("--batch_size", "at least 2")),
    BadInput("batch-size-float", printed("--batch_size", "2.5"), ("--batch_size", "integer")),
    BadInput("max-epochs-zero", printed("--max_epochs", "0"), ("--max_epochs", "at least 1")),
    BadInput("max-steps-zero", printed("--max_steps", "0"), ("--max_steps", "-1")),
    BadInput("seed-negative", printed("--seed", "-1"), ("--seed", "between 0 and 4294967295")),
    BadInput("seed-too-large", printed("--seed", str(2**32)), ("--seed", "between 0")),
    BadInput("num-workers-negative", printed("--num_workers", "-2"), ("--num_workers", "0")),
    BadInput("projection-dim-zero", printed("--projection_dim", "0"), ("--projection_dim", "at least 1")),
    BadInput("checkpoint-every-zero", printed("--checkpoint_every_n_epochs", "0"),
             ("--checkpoint_every_n_epochs", "at least 1")),
    BadInput("log-every-zero", printed("--log_every_n_steps", "0"), ("--log_every_n_steps", "at least 1")),
    BadInput("num-nodes-zero", printed("--num_nodes", "0"), ("--num_nodes", "at least 1")),
    BadInput("augment-on-gpu", printed("--augment_on", "gpu"), ("--augment_on", "device, cpu, none")),
    BadInput("accelerator-tpu", train("--accelerator", "tpu"), ("--accelerator", "tpu", "cpu, gpu")),
    BadInput("devices-word", printed("--devices", "banana"), ("--devices", "auto", "0,1")),
    BadInput("devices-zero", printed("--devices", "0"), ("--devices", "a count")),
    BadInput("precision-unknown", printed("--precision", "8"), ("--precision", "bf16-mixed")),
    BadInput("name-with-slash", printed("--name", "a/b"), ("--name", "without '/'")),
    BadInput("audio-dir-empty-string", printed("--audio_dir", ""), ("--audio_dir", "give a folder")),
    BadInput("dataset-a-path", printed("--dataset", "/data/mtt"), ("--dataset", "--audio_dir")),
    BadInput("p-pitch-above-one", printed("--augment.p_pitch", "1.5"), ("--augment.p_pitch", "from 0 to 1")),
    BadInput("p-noise-nan", printed("--augment.p_noise", "nan"), ("--augment.p_noise", "probability")),
    BadInput("lowpass-reversed", printed("--augment.lowpass_hz", "4000", "2200"),
             ("--augment.lowpass_hz", "LOW <= HIGH")),
    BadInput("highpass-zero", printed("--augment.highpass_hz", "0", "100"), ("--augment.highpass_hz", "0 < LOW")),
    BadInput("highpass-above-nyquist", printed("--augment.highpass_hz", "200", "20000"),
             ("--augment.highpass_hz", "11025")),
    BadInput("noise-snr-inf", printed("--augment.noise_snr", "0", "inf"), ("--augment.noise_snr", "finite")),
    BadInput("max-semitones-zero", printed("--augment.max_semitones", "0"),
             ("--augment.max_semitones", "greater than 0")),
    BadInput("augment-sample-rate", printed("--augment.sample_rate", "16000"), ("--augment.sample_rate", "22050")),
    BadInput("delay-volume-negative", printed("--augment.delay_volume", "-1"), ("--augment.delay_volume", "0 to 1")),
    BadInput("max-semitones-above-24", printed("--augment.max_semitones", "25"),
             ("--augment.max_semitones", "at most 24")),
    BadInput("max-semitones-below-a-cent", printed("--augment.max_semitones", "0.004"),
             ("--augment.max_semitones", "at least 0.01", "whole cents")),
    # --- --encoder_config ---
    BadInput("encoder-config-not-json", printed("--encoder_config", "not json"),
             ("--encoder_config", "not json", "give an object")),
    BadInput("encoder-config-a-list", printed("--encoder_config", "[4, 4]"), ("--encoder_config", "JSON object")),
    BadInput("encoder-config-unknown-key", printed("--model", "tune", "--encoder_config", '{"chanels": 4}'),
             ("--encoder_config", "chanels", "valid fields: channels, out_channels")),
    BadInput("encoder-config-wrong-type", printed("--model", "tune", "--encoder_config", '{"channels": "four"}'),
             ("--encoder_config", "positive integer")),
    BadInput("encoder-config-zero-width", printed("--model", "tune", "--encoder_config", '{"out_channels": 0}'),
             ("--encoder_config", "positive integer")),
    BadInput("encoder-config-clmr-widths", printed("--model", "clmr", "--encoder_config", '{"channels": [4, 4]}'),
             ("--encoder_config", "list of 11 positive integers")),
    BadInput("encoder-config-plus-on-tune", printed("--model", "tune", "--encoder_config", '{"plus": true}'),
             ("--encoder_config", "--model tune_plus")),
    # --- --config YAML ---
    BadInput("yaml-missing", train("--config", "{tmp}/nope.yaml"), ("--config", "does not exist")),
    BadInput("yaml-a-folder", train("--config", "{tmp}"), ("--config", "directory")),
    BadInput("yaml-malformed", train("--config", "{tmp}/cfg.yaml"), ("cfg.yaml, line 2", "not valid yaml", "fix"),
             setup=yaml_file("model: clmr\nbatch_size: 2: 3\n")),
    BadInput("yaml-a-list", train("--config", "{tmp}/cfg.yaml"), ("cfg.yaml", "mapping", "key: value"),
             setup=yaml_file("- model: clmr\n- batch_size: 2\n")),
    BadInput("yaml-a-scalar", train("--config", "{tmp}/cfg.yaml"), ("cfg.yaml", "mapping", "not a str"),
             setup=yaml_file("just some words\n")),
    BadInput("yaml-unknown-key", train("--config", "{tmp}/cfg.yaml"),
             ("cfg.yaml", "unknown option 'batchsize'", "did you mean 'batch_size'"),
             setup=yaml_file("batchsize: 4\n")),
    BadInput("yaml-wrong-type", train("--config", "{tmp}/cfg.yaml"), ("cfg.yaml: batch_size", "not a valid int"),
             setup=yaml_file("batch_size: many\n")),
    BadInput("yaml-key-of-augment-at-top", train("--config", "{tmp}/cfg.yaml"),
             ("cfg.yaml", "'p_pitch'", "belongs under `augment:`"), setup=yaml_file("p_pitch: 0.2\n")),
    BadInput("yaml-top-key-under-augment", train("--config", "{tmp}/cfg.yaml"),
             ("cfg.yaml", "'temperature'", "at the top level"), setup=yaml_file("augment:\n  temperature: 0.2\n")),
    BadInput("yaml-augment-not-mapping", train("--config", "{tmp}/cfg.yaml"), ("cfg.yaml: augment", "mapping"),
             setup=yaml_file("augment: 3\n")),
    BadInput("yaml-null-batch-size", train("--config", "{tmp}/cfg.yaml"), ("cfg.yaml: batch_size", "give a value"),
             setup=yaml_file("batch_size:\n")),
    BadInput("yaml-temperature-zero", train("--config", "{tmp}/cfg.yaml"), ("cfg.yaml: temperature", "greater than 0"),
             setup=yaml_file("temperature: 0\n")),
    BadInput("yaml-nan-learning-rate", train("--config", "{tmp}/cfg.yaml"), ("cfg.yaml: learning_rate", "finite"),
             setup=yaml_file("learning_rate: .nan\n")),
    BadInput("yaml-nested-p-reverb", train("--config", "{tmp}/cfg.yaml"), ("cfg.yaml: augment.p_reverb", "0 to 1"),
             setup=yaml_file("augment:\n  p_reverb: 7\n")),
    BadInput("yaml-encoder-config-mapping-unknown", train("--config", "{tmp}/cfg.yaml"),
             ("cfg.yaml: encoder_config", "unknown field 'width'", "valid fields"),
             setup=yaml_file("model: clmr\nencoder_config:\n  width: 4\n")),
    BadInput("yaml-not-utf8", train("--config", "{tmp}/cfg.yaml"), ("cfg.yaml", "UTF-8"),
             setup=yaml_file(b"model: \xff\xfe clmr\n")),
    BadInput("yaml-bool-as-string", train("--config", "{tmp}/cfg.yaml"), ("cfg.yaml: sync_batchnorm", "bool"),
             setup=yaml_file("sync_batchnorm: maybe\n")),
    # --- --resume ---
    BadInput("resume-missing", train("--resume", "{tmp}/none.ckpt"), ("--resume", "none.ckpt", "does not exist")),
    BadInput("resume-a-folder", train("--resume", "{tmp}"), ("--resume", "is a folder", "checkpoints/")),
    BadInput("resume-last-nothing-there", train("--resume", "last", "--output_dir", "{tmp}/runs"),
             ("--resume", "last.ckpt", "--output_dir and --name")),
    BadInput("resume-garbage", train("--resume", "{tmp}/x.ckpt"), ("--resume", "x.ckpt", "not a readable"),
             exit_code=1, setup=garbage("x.ckpt")),
    BadInput("resume-empty-file", train("--resume", "{tmp}/x.ckpt"), ("--resume", "x.ckpt", "checkpoints/*.ckpt"),
             exit_code=1, setup=garbage("x.ckpt", b"")),
    BadInput("resume-truncated-zip", train("--resume", "{tmp}/x.ckpt"), ("--resume", "x.ckpt", "not a readable"),
             exit_code=1, setup=garbage("x.ckpt", b"PK\x03\x04" + b"\0" * 40)),
    BadInput("resume-safetensors", train("--resume", "{tmp}/tiny.safetensors"),
             ("--resume", "tiny.safetensors", "only an encoder's weights"), exit_code=1, setup=safetensors_file),
    BadInput("resume-released-clmr-ckpt", train("--resume", "{released}"),
             ("--resume", "not a checkpoint of `tunemir train`", "tunemir extract"), exit_code=1,
             setup=released_checkpoint),
    BadInput("resume-other-model", train("--resume", "{tmp}/run.ckpt", "--model", "tune"),
             ("--model", "run.ckpt", "trained with model='clmr'", "new run"), setup=tunemir_checkpoint),
    BadInput("resume-other-encoder-config", train("--resume", "{tmp}/run.ckpt", "--encoder_config",
                                                  json.dumps({"channels": [8] * 11})),
             ("--encoder_config", "run.ckpt", "keeps the network's shape"), setup=tunemir_checkpoint),
    BadInput("resume-other-projection", train("--resume", "{tmp}/run.ckpt", "--projection_dim", "32"),
             ("--projection_dim", "trained with projection_dim=64"), setup=tunemir_checkpoint),
    BadInput("resume-bad-override", train("--resume", "{tmp}/run.ckpt", "--temperature", "0"),
             ("--temperature", "greater than 0"), setup=tunemir_checkpoint),
    # --- data and output folders ---
    BadInput("audio-dir-missing", train(*TINY, *LOCAL, "--audio_dir", "{tmp}/nowhere"),
             ("--audio_dir", "nowhere", "give a folder"), exit_code=1),
    BadInput("audio-dir-without-audio", train(*TINY, *LOCAL, "--audio_dir", "{tmp}"),
             ("holds no WAV/FLAC/OGG/MP3",), exit_code=1),
    BadInput("dataset-not-processed", train(*TINY, *LOCAL, "--datasets_dir", "{tmp}/processed"),
             ("meta.json not found", "process the 'magnatagatune' dataset", "--audio_dir"), exit_code=1),
    BadInput("split-not-present", train(*TINY, *LOCAL, "--datasets_dir", "{tmp}/processed", "--split", "tarin"),
             ("split 'tarin'", "splits present: test, train, valid"), exit_code=1, setup=processed),
    BadInput("output-dir-is-a-file", train(*TINY, *LOCAL, "--audio_dir", "{tmp}/audio", "--output_dir", "{tmp}/f"),
             ("--output_dir", "writable folder"), exit_code=1,
             setup=audio_and_a_file),
    BadInput("strategy-unknown", train(*TINY, *LOCAL, "--audio_dir", "{tmp}/audio", "--strategy", "banana"),
             ("--strategy banana", "Lightning cannot set these up", "change them"), setup=audio_folder),
    # --- tunemir evaluate linear ---
    BadInput("linear-neither", ("evaluate", "linear"), ("--checkpoint", "--supervised")),
    BadInput("linear-both", ("evaluate", "linear", "--checkpoint", "{tmp}/tiny.safetensors", "--supervised"),
             ("--checkpoint", "not both"), setup=safetensors_file),
    BadInput("linear-supervised-no-model", (*LINEAR, "--supervised"), ("--supervised needs --model", "clmr")),
    BadInput("linear-supervised-unknown-model", (*LINEAR, "--supervised", "--model", "foo"),
             ("--model foo", "clmr, tune, tune_plus")),
    BadInput("linear-supervised-handcrafted", (*LINEAR, "--supervised", "--model", "mfcc"), ("--model mfcc", "clmr")),
    BadInput("linear-learning-rate-zero", (*SUPERVISED, "--learning-rate", "0"), ("--learning-rate", "greater than 0")),
    BadInput("linear-learning-rate-nan", (*SUPERVISED, "--learning-rate", "nan"), ("--learning-rate", "finite")),
    BadInput("linear-learning-rate-inf", (*SUPERVISED, "--learning-rate", "inf"), ("--learning-rate", "finite")),
    BadInput("linear-seed-negative", (*SUPERVISED, "--seed", "-3"), ("--seed", "0<=x<=4294967295")),
    BadInput("linear-batch-size-zero", (*SUPERVISED, "--batch-size", "0"), ("--batch-size", "x>=1")),
    BadInput("linear-supervised-batch-one", (*SUPERVISED, "--batch-size", "1"), ("--batch-size", "at least 2")),
    BadInput("linear-max-epochs-zero", (*SUPERVISED, "--max-epochs", "0"), ("--max-epochs", "x>=1")),
    BadInput("linear-patience-zero", (*SUPERVISED, "--patience", "0"), ("--patience", "x>=1")),
    BadInput("linear-device-word", (*SUPERVISED, "--device", "banana"), ("--device", "cuda:N")),
    BadInput("linear-encoder-config-not-json", (*SUPERVISED, "--encoder-config", "{channels: 4}"),
             ("--encoder-config", "not JSON")),
    BadInput("linear-encoder-config-unknown-key", (*SUPERVISED, "--encoder-config", '{"chanels": [4]}'),
             ("--encoder-config", "'chanels'", "valid fields: channels")),
    BadInput("linear-encoder-config-a-number", (*SUPERVISED, "--encoder-config", "4"),
             ("--encoder-config", "JSON object")),
    BadInput("linear-encoder-config-without-supervised",
             (*LINEAR, "--checkpoint", "{tmp}/tiny.safetensors", "--encoder-config", TINY_CLMR),
             ("--encoder-config", "with --supervised only"), setup=safetensors_file),
    BadInput("linear-mlp-supervised", (*SUPERVISED, "--mlp"), ("--mlp", "leave it out")),
    BadInput("linear-checkpoint-missing", (*LINEAR, "--checkpoint", "{tmp}/none.safetensors"),
             ("--checkpoint", "does not exist")),
    BadInput("linear-checkpoint-a-folder", (*LINEAR, "--checkpoint", "{tmp}"), ("--checkpoint", "directory")),
    BadInput("linear-output-dir-a-file", (*LINEAR, "--checkpoint", "{tmp}/tiny.safetensors", "--output-dir",
                                          "{tmp}/tiny.safetensors"), ("--output-dir", "is a file"),
             setup=safetensors_file),
    BadInput("linear-dataset-not-processed", (*SUPERVISED, "--encoder-config", TINY_CLMR),
             ("meta.json not found", "process the 'magnatagatune' dataset"), exit_code=1),
    BadInput("linear-dataset-no-task", (*SUPERVISED, "--dataset", "my_songs"), ("my_songs", "task"), exit_code=1),
    BadInput("linear-regression-dataset", (*SUPERVISED, "--dataset", "emomusic", "--encoder-config", TINY_CLMR),
             ("--dataset emomusic", "regression", "tunemir probe"), setup=processed),
    BadInput("linear-nan-encoder", (*LINEAR, "--checkpoint", "{tmp}/nan.safetensors"),
             ("nan.safetensors", "non-finite features", "earlier checkpoint"), exit_code=1, setup=nan_encoder),
]
if not torch.cuda.is_available():
    CASES.append(BadInput("accelerator-gpu-without-one",
                          train(*TINY, *LOCAL, "--audio_dir", "{tmp}/audio", "--accelerator", "gpu"),
                          ("--accelerator gpu", "--accelerator cpu"), setup=audio_folder))


@pytest.fixture(autouse=True)
def no_training(monkeypatch):
    """Every case must fail before an optimizer step: a training step here fails the test."""
    from tunemir.pretrain.module import ContrastiveLearning

    def refuse(*args, **kwargs):
        raise AssertionError("a training step started: the bad input was not caught before training")
    monkeypatch.setattr(ContrastiveLearning, "training_step", refuse)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case, tmp_path):
    check_bad_input(case, tmp_path)


def test_the_table_is_large_enough():
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)
