"""Pretraining: configuration, audio cache, crop pairs, Lightning training, checkpoints, resume."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soxr
import torch
import yaml
from click.testing import CliRunner

from tunemir.audio import FRAME_LENGTH, SAMPLE_RATE
from tunemir.cli import main
from tunemir.pretrain.config import ConfigError, PretrainConfig, dump_config, load_config
from tunemir.pretrain.data import (
    AudioCache, CropPairs, EpochSampler, PretrainDataError, build_cache, dataset_sources, folder_sources,
)
from tunemir.pretrain.module import read_loss, train
from tunemir.probe.tasks import BUILTIN_TASKS
from tunemir.testing import TINY_CONFIGS, write_audio, write_processed_audio

TINY_CLMR = json.dumps({"channels": list(TINY_CONFIGS["clmr"].channels)})


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory):
    """Ten clips of 4-7 s at two sample rates, plus one clip shorter than a frame."""
    folder = tmp_path_factory.mktemp("pretrain-audio")
    for i in range(10):
        write_audio(folder / f"clip{i}.wav", 4.0 + 0.3 * i, 22050 if i % 2 else 16000, seed=i)
    write_audio(folder / "short.wav", 1.0, 22050, seed=99)
    return folder


def tiny_config(tmp_path, audio_dir, **overrides):
    values = {"model": "clmr", "encoder_config": TINY_CLMR, "audio_dir": str(audio_dir),
              "audio_cache_dir": str(tmp_path / "cache"), "output_dir": str(tmp_path / "runs"), "batch_size": 4,
              "max_epochs": 1, "checkpoint_every_n_epochs": 1, "num_workers": 0, "accelerator": "cpu",
              "log_every_n_steps": 1}
    values.update(overrides)
    return load_config(overrides=values)


def test_config_defaults_are_the_paper_recipe():
    c = PretrainConfig()
    assert (c.model, c.dataset, c.split, c.batch_size, c.learning_rate, c.temperature, c.seed) == \
        ("tune_plus", "magnatagatune", "train", 48, 3e-4, 0.5, 42)
    assert (c.projection_dim, c.max_epochs, c.augment.p_pitch, c.augment.p_reverb) == (64, 10000, 0.6, 0.6)
    assert (c.accelerator, c.devices, c.num_nodes, c.strategy, c.lr_scaling) == ("auto", "1", 1, "auto", "none")


def test_config_yaml_then_command_line(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("model: clmr\nlearning_rate: 1e-3\nbatch_size: 32\naugment:\n  p_pitch: 0.2\n")
    c = load_config(path, {"batch_size": 16, "augment.p_reverb": 0.1})
    assert (c.model, c.learning_rate, c.batch_size) == ("clmr", 1e-3, 16)
    assert (c.augment.p_pitch, c.augment.p_reverb, c.augment.p_polarity) == (0.2, 0.1, 0.8)
    again = tmp_path / "again.yaml"
    again.write_text(dump_config(c))
    assert load_config(again) == c


@pytest.mark.parametrize("text, message", [
    ("batchsize: 3\n", "unknown option 'batchsize'"),
    ("batch_size: many\n", "batch_size='many' is not a valid int"),
    ("augment_on: gpu\n", "augment_on='gpu'"),
    ("augment:\n  p_pich: 0.1\n", "unknown option 'p_pich'"),
    ("sync_batchnorm: 3\n", "not a valid bool"),
])
def test_config_errors_name_the_option(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config(path)


def test_cache_decodes_once_resamples_and_lists_failures(tmp_path, audio_dir):
    folder = tmp_path / "audio"
    folder.mkdir()
    for path in audio_dir.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "broken.wav").write_bytes(b"RIFF not really a wave file")
    cache = build_cache(folder_sources(folder), tmp_path / "cache", "x", workers=1, progress=False)
    assert "broken.wav" in cache.failed and len(cache) == 11
    import soundfile as sf

    signal, rate = sf.read(folder / "clip0.wav", dtype="float32")
    expected = soxr.resample(signal, rate, SAMPLE_RATE, quality="HQ") if rate != SAMPLE_RATE else signal
    got = cache.clip(cache.uids.index("clip0.wav"))
    assert rate == 16000 and len(got) == len(expected)
    assert np.abs(got - expected).max() < 2 / 32768  # int16 storage: quantisation only
    stamp = (cache.folder / "audio.i16").stat().st_mtime_ns
    again = build_cache(folder_sources(folder), tmp_path / "cache", "x", workers=1, progress=False)
    assert again.folder == cache.folder and (again.folder / "audio.i16").stat().st_mtime_ns == stamp
    write_audio(folder / "clip0.wav", 5.0, 22050, seed=7)  # a changed source gives a new cache
    changed = build_cache(folder_sources(folder), tmp_path / "cache", "x", workers=1, progress=False)
    assert changed.folder != cache.folder


def test_crop_pairs_are_independent_windows_of_their_clip(tmp_path, audio_dir):
    cache = build_cache(folder_sources(audio_dir), tmp_path / "cache", "x", workers=1, progress=False)
    data = CropPairs(cache, seed=42)
    assert len(data) == 10 and data.excluded == 1
    assert "short.wav" not in [cache.uids[i] for i in data.clips]
    differing = 0
    for key in range(3 * len(data)):  # three epochs
        views = data[key]
        assert views.shape == (2, FRAME_LENGTH) and views.dtype == torch.float32
        clip = cache.clip(int(data.clips[key % len(data)]))
        starts = []
        for view in views.numpy():
            windows = np.lib.stride_tricks.sliding_window_view(clip, 32)
            start = int(np.flatnonzero((windows == view[:32]).all(axis=1))[0])
            np.testing.assert_array_equal(clip[start: start + FRAME_LENGTH], view)
            starts.append(start)
        differing += starts[0] != starts[1]
        torch.testing.assert_close(data[key], views, rtol=0, atol=0)  # a pure function of (seed, key)
    assert differing >= 3 * len(data) - 1
    assert not torch.equal(data[0], data[len(data)])  # the same clip in the next epoch: new crops


def test_epoch_sampler_covers_each_epoch_and_splits_ranks(tmp_path, audio_dir):
    cache = build_cache(folder_sources(audio_dir), tmp_path / "cache", "x", workers=1, progress=False)
    data = CropPairs(cache, seed=0)
    shares = []
    for rank in range(2):
        sampler = EpochSampler(data, num_replicas=2, rank=rank, shuffle=True, seed=0)
        sampler.set_epoch(3)
        shares.append(list(sampler))
    keys = shares[0] + shares[1]
    assert sorted(k - 3 * len(data) for k in keys) == list(range(len(data)))


def test_processed_split_sources_and_errors(tmp_path):
    write_processed_audio(tmp_path, "magnatagatune", BUILTIN_TASKS["magnatagatune"],
                          {"train": 3, "valid": 1, "test": 1}, seconds=(3, 3))
    sources = dataset_sources(tmp_path, "magnatagatune", "train")
    assert [uid for uid, _ in sources] == ["00000", "00001", "00002"]
    assert len(dataset_sources(tmp_path, "magnatagatune", "train,valid")) == 4
    with pytest.raises(PretrainDataError, match="splits present: test, train, valid"):
        dataset_sources(tmp_path, "magnatagatune", "everything")
    (tmp_path / "magnatagatune" / "wav" / "00001.wav").unlink()
    with pytest.raises(PretrainDataError, match="1 of 3 clips .* have no WAV"):
        dataset_sources(tmp_path, "magnatagatune", "train")
    with pytest.raises(PretrainDataError, match="process the 'gtzan_ff' dataset first"):
        dataset_sources(tmp_path, "gtzan_ff", "train")


def test_a_few_cpu_steps_lower_the_loss(tmp_path, audio_dir):
    config = tiny_config(tmp_path, audio_dir, batch_size=5, max_epochs=12, learning_rate=3e-3, augment_on="none",
                         checkpoint_every_n_epochs=100)
    folder = train(config, progress=False)
    steps, losses, epochs, epoch_loss = read_loss(folder / "csv")
    assert len(steps) == 24 and len(epoch_loss) == 12
    assert np.mean(epoch_loss[-3:]) < np.mean(epoch_loss[:3]) - 0.2
    assert (folder / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((folder / "run.json").read_text())
    assert (report["clips"], report["clips_excluded_short"], report["global_step"]) == (10, 1, 24)
    # One device (the default): batch and learning rate as configured, 2B - 2 negatives per view.
    assert (report["world_size"], report["global_batch"], report["learning_rate"], report["negatives_per_view"]) == \
        (1, 5, 3e-3, 8)


def test_checkpoint_extracts_and_resumes_exactly(tmp_path, audio_dir):
    """Two epochs straight vs one epoch then `tunemir train --resume last` (device augmentations on)."""
    straight = train(tiny_config(tmp_path / "a", audio_dir, max_epochs=2), progress=False)
    config = tiny_config(tmp_path / "b", audio_dir, max_epochs=1)
    interrupted = train(config, progress=False)
    first = torch.load(interrupted / "checkpoints" / "last.ckpt", weights_only=True)
    assert (first["epoch"], first["global_step"]) == (0, 2)
    result = CliRunner().invoke(main, ["train", "--resume", "last", "--max_epochs", "2", "--no-progress",
                                       "--output_dir", config.output_dir, "--name", config.run_name])
    assert result.exit_code == 0, result.output
    a = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(interrupted / "checkpoints" / "last.ckpt", weights_only=True)
    assert (b["epoch"], b["global_step"]) == (a["epoch"], a["global_step"]) == (1, 4)
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], rtol=0, atol=0)
    torch.testing.assert_close(a["optimizer_states"][0]["state"][0]["exp_avg"],
                               b["optimizer_states"][0]["state"][0]["exp_avg"], rtol=0, atol=0)
    # CLMR's key layout: the original loaders select `model.encoder.*`.
    keys = set(a["state_dict"])
    assert {"model.projector.0.weight", "model.projector.2.weight"} <= keys
    assert all(k.startswith(("model.encoder.", "model.projector.")) for k in keys)
    assert a["state_dict"]["model.projector.2.weight"].shape == (64, 16)
    # CLMR's load_encoder_checkpoint: Lightning file -> keys *containing* "model.encoder.", substring
    # deleted; the result must be exactly an encoder state_dict (it then adds its dummy fc).
    original = {k.replace("model.encoder.", ""): v for k, v in a["state_dict"].items() if "model.encoder." in k}
    assert "pytorch-lightning_version" in a
    # `tunemir extract --checkpoint` reads it; vectors equal the encoder's own output.
    from tunemir.models import build_model, config_from_dict

    encoder = build_model("clmr", config_from_dict("clmr", json.loads(TINY_CLMR)))
    encoder.load_state_dict(original, strict=True)
    out = tmp_path / "vectors"
    result = CliRunner().invoke(main, ["extract", "clmr", str(audio_dir), str(out), "--checkpoint",
                                       str(straight / "checkpoints" / "epoch=00001.ckpt")])
    assert result.exit_code == 0, result.output
    from tunemir.audio import load_mono

    frames = torch.from_numpy(load_mono(audio_dir / "clip9.wav")[: 2 * FRAME_LENGTH].reshape(2, 1, -1))
    with torch.no_grad():
        expected = encoder.eval()(frames).mean(0).numpy()
    np.testing.assert_allclose(np.load(out / "clip9.npy"), expected, rtol=1e-4, atol=1e-5)
    converted = tmp_path / "encoder.safetensors"
    result = CliRunner().invoke(main, ["convert-checkpoint", str(straight / "checkpoints" / "last.ckpt"),
                                       str(converted)])
    assert result.exit_code == 0 and "clmr encoder" in result.output


def test_cpu_worker_augmentation_pipeline_trains(tmp_path, audio_dir):
    folder = train(tiny_config(tmp_path, audio_dir, augment_on="cpu", max_steps=1), progress=False)
    assert json.loads((folder / "run.json").read_text())["global_step"] == 1


def test_too_few_clips_is_a_clear_error(tmp_path, audio_dir):
    with pytest.raises(ValueError, match="10 usable clips cannot fill one batch of 16"):
        train(tiny_config(tmp_path, audio_dir, batch_size=16), progress=False)


def test_cache_reopens_without_the_sources(tmp_path, audio_dir):
    cache = build_cache(folder_sources(audio_dir), tmp_path / "cache", "x", workers=1, progress=False)
    reopened = AudioCache.open(cache.folder)
    np.testing.assert_array_equal(reopened.clip(3), cache.clip(3))


def test_train_help_explains_the_recipe_and_multi_gpu():
    result = CliRunner().invoke(main, ["train", "--help"])
    assert result.exit_code == 0
    for text in ("10,000 epochs", "batch 48", "--devices 4 --strategy ddp", "--num_nodes", "--gather-negatives",
                 "--augment.p_pitch", "--resume"):
        assert text in result.output


def test_paper_config_trains_on_one_device():
    """configs/paper.yaml and the defaults: one device, TUNe's setup, not every visible GPU."""
    paper = Path(__file__).parents[1] / "configs" / "paper.yaml"
    result = CliRunner().invoke(main, ["train", "--config", str(paper), "--print-config"])
    assert result.exit_code == 0, result.output
    printed = yaml.safe_load(result.output)
    assert (printed["devices"], printed["num_nodes"], printed["strategy"], printed["lr_scaling"]) == \
        ("1", 1, "auto", "none")
    assert load_config(overrides={"devices": "4", "lr_scaling": "linear"}).lr_scaling == "linear"


def test_scale_of_a_step_on_several_devices():
    """Global batch, learning rate and negatives per view, as PretrainConfig.scaled states them."""
    paper = PretrainConfig()
    assert paper.scaled(1) == {"world_size": 1, "batch_size_per_device": 48, "global_batch": 48, "lr_scaling": "none",
                               "learning_rate": 3e-4, "negatives": "per device", "negatives_per_view": 94}
    four = paper.scaled(4)  # CLMR: the same learning rate, negatives within each GPU's 48 clips
    assert (four["global_batch"], four["learning_rate"], four["negatives_per_view"]) == (192, 3e-4, 94)
    tune = load_config(overrides={"lr_scaling": "linear", "gather_negatives": True}).scaled(4)
    assert (tune["learning_rate"], tune["negatives"], tune["negatives_per_view"]) == (pytest.approx(1.2e-3),
                                                                                      "global", 2 * 192 - 2)
    with pytest.raises(ConfigError, match="--lr_scaling='sqrt': choose one of none, linear"):
        load_config(overrides={"lr_scaling": "sqrt"})


def test_two_process_ddp_with_gathered_negatives(tmp_path, audio_dir, caplog):
    """Lightning's ddp_spawn on CPU (gloo): two ranks, each its share of the shuffle, NT-Xent
    over both ranks' views (batch 2 per rank, so 8 views in every loss), TUNe's lr x devices."""
    config = tiny_config(tmp_path, audio_dir, batch_size=2, devices="2", strategy="ddp_spawn",
                         gather_negatives=True, augment_on="none", lr_scaling="linear", learning_rate=1e-3)
    with caplog.at_level(logging.INFO, logger="tunemir.pretrain.module"):
        folder = train(config, progress=False)
    started = [r.getMessage() for r in caplog.records if r.getMessage().startswith("training on")]
    assert len(started) == 1
    for text in ("2 device(s) x 1 node(s)", "global batch 4 clips (2 per device, 8 views)", "learning rate 0.002",
                 "lr_scaling linear", "6 negatives per view (gathered from every device)"):
        assert text in started[0], started[0]
    report = json.loads((folder / "run.json").read_text())
    assert report["world_size"] == 2
    assert (report["global_batch"], report["learning_rate"], report["lr_scaling"], report["negatives_per_view"]) == \
        (4, 2e-3, "linear", 6)
    # The rate the optimizer actually stepped with, as the checkpoint stores it.
    state = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)
    assert [g["lr"] for g in state["optimizer_states"][0]["param_groups"]] == [2e-3]
    assert report["global_step"] == 10 // (2 * 2)  # 10 clips, 2 per rank per step, last partial dropped
    steps, losses, _, _ = read_loss(folder / "csv")
    # Before any learning, NT-Xent is about log(2N - 1) for the 2N = 8 gathered views, not log(3).
    assert abs(losses[0] - np.log(7)) < 0.5


def test_config_yaml_spellings_of_encoder_config_and_devices(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("model: clmr\nencoder_config:\n  channels: [4, 4, 4, 8, 8, 8, 8, 8, 8, 16, 16]\n"
                    "devices: [0, 1]\nprecision: 32\n")
    c = load_config(path)
    assert json.loads(c.encoder_config) == json.loads(TINY_CLMR)
    assert (c.devices, c.precision) == ("0,1", "32")
    assert load_config(path, {"devices": "auto"}).devices == "auto"


@pytest.mark.parametrize("overrides, message", [
    ({"temperature": 0.0}, "--temperature=0.0: must be a finite number greater than 0"),
    ({"learning_rate": float("inf")}, "--learning_rate=inf"),
    ({"augment.p_pitch": -0.1}, "--augment.p_pitch=-0.1: a probability"),
    ({"model": "tune", "encoder_config": '{"channels": 2, "depth": 3}'}, "unknown field 'depth' for tune"),
])
def test_every_value_is_checked_and_named_as_typed(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_config(overrides=overrides)


def test_non_finite_audio_is_a_failed_file_not_a_clip(tmp_path):
    import soundfile as sf

    folder = tmp_path / "audio"
    folder.mkdir()
    signal = np.random.default_rng(0).uniform(-0.5, 0.5, 3 * SAMPLE_RATE).astype(np.float32)
    sf.write(folder / "fine.wav", signal, SAMPLE_RATE, subtype="FLOAT")
    signal[100] = np.nan
    sf.write(folder / "nan.wav", signal, SAMPLE_RATE, subtype="FLOAT")
    cache = build_cache(folder_sources(folder), tmp_path / "cache", "x", workers=1, progress=False)
    assert cache.uids == ["fine.wav"] and "NaN" in cache.failed["nan.wav"]  # not int16 garbage


def test_a_checkpoint_with_non_finite_weights_is_never_written(tmp_path):
    from tunemir.pretrain.module import AtomicCheckpointIO, TrainingError

    state = {"model.encoder.w": torch.ones(3), "model.projector.0.weight": torch.tensor([1.0, float("inf")])}
    target = tmp_path / "checkpoints" / "last.ckpt"
    with pytest.raises(TrainingError, match=r"epoch 4, step 9: 1 weight tensors are not finite \(first: "
                                            r"model.projector.0.weight\), so last.ckpt was not written"):
        AtomicCheckpointIO().save_checkpoint({"state_dict": state, "epoch": 4, "global_step": 9}, target)
    assert not target.parent.exists()  # nothing written, not even a temporary file
    state["model.projector.0.weight"][1] = 2.0
    AtomicCheckpointIO().save_checkpoint({"state_dict": state, "epoch": 4, "global_step": 9}, target)
    assert torch.load(target, weights_only=True)["state_dict"]["model.projector.0.weight"].tolist() == [1.0, 2.0]


def _train_cli(tmp_path, audio_dir, *extra):
    args = ["train", "--model", "clmr", "--encoder_config", TINY_CLMR, "--audio_dir", str(audio_dir),
            "--audio_cache_dir", str(tmp_path / "cache"), "--output_dir", str(tmp_path / "runs"), "--name", "run",
            "--batch_size", "4", "--num_workers", "0", "--accelerator", "cpu", "--checkpoint_every_n_epochs", "1",
            "--augment_on", "none", "--no-progress", *extra]
    return CliRunner().invoke(main, args)


@pytest.mark.slow
def test_a_diverging_run_stops_with_exit_1_and_writes_no_weights(tmp_path, audio_dir):
    result = _train_cli(tmp_path, audio_dir, "--max_epochs", "3", "--learning_rate", "1e30")
    assert result.exit_code == 1 and result.exception is None or isinstance(result.exception, SystemExit)
    assert "training stopped at epoch 0, step 1: the NT-Xent loss is nan" in result.output
    assert "--learning_rate 1e+30 too large" in result.output
    assert list((tmp_path / "runs" / "run" / "checkpoints").glob("*.ckpt")) == []
    assert not (tmp_path / "runs" / "run" / "run.json").exists()


@pytest.mark.slow
def test_divergence_after_a_good_epoch_keeps_the_good_checkpoint(tmp_path, audio_dir):
    assert _train_cli(tmp_path, audio_dir, "--max_epochs", "1").exit_code == 0
    last = tmp_path / "runs" / "run" / "checkpoints" / "last.ckpt"
    good = last.read_bytes()
    # A resumed run keeps the network: another model is refused before anything runs.
    refused = _train_cli(tmp_path, audio_dir, "--resume", "last", "--model", "tune", "--encoder_config", "{}")
    assert refused.exit_code == 2 and "trained with model='clmr'" in refused.output
    # The resumed run uses the learning rate given now (not the one in the optimizer state), and diverges.
    result = _train_cli(tmp_path, audio_dir, "--resume", "last", "--max_epochs", "3", "--learning_rate", "1e30")
    assert result.exit_code == 1, result.output
    assert "training stopped at epoch 1, step 3: the NT-Xent loss is nan" in result.output
    assert last.read_bytes() == good
    assert sorted(p.name for p in last.parent.glob("*.ckpt")) == ["epoch=00000.ckpt", "last.ckpt"]
    state = torch.load(last, weights_only=True)
    assert state["epoch"] == 0 and all(torch.isfinite(v).all() for v in state["state_dict"].values())


@pytest.mark.slow
def test_a_rerun_never_overwrites_a_run_and_resume_auto_continues_it(tmp_path, audio_dir):
    """`tunemir train` again under a run's name (what `docker compose up trainer` does after a
    crash) is refused without --resume; --resume auto continues the run, or starts one."""
    args = ["train", "--model", "clmr", "--encoder_config", TINY_CLMR, "--audio_dir", str(audio_dir),
            "--audio_cache_dir", str(tmp_path / "cache"), "--output_dir", str(tmp_path / "runs"), "--name", "r",
            "--batch_size", "4", "--checkpoint_every_n_epochs", "1", "--num_workers", "0", "--accelerator", "cpu",
            "--no-progress"]
    last = tmp_path / "runs" / "r" / "checkpoints" / "last.ckpt"
    first = CliRunner().invoke(main, [*args, "--max_epochs", "1", "--resume", "auto"])  # nothing yet: a new run
    assert first.exit_code == 0, first.output
    before = last.read_bytes()
    again = CliRunner().invoke(main, [*args, "--max_epochs", "2"])
    assert again.exit_code == 2 and "already holds checkpoints" in again.output and "--resume last" in again.output
    assert last.read_bytes() == before  # nothing written
    resumed = CliRunner().invoke(main, [*args, "--max_epochs", "2", "--resume", "auto"])
    assert resumed.exit_code == 0, resumed.output
    state = torch.load(last, weights_only=True)
    assert (state["epoch"], state["global_step"]) == (1, 4)  # one more epoch on top of the first
