"""An engine holding several models: loaded on first use through the real loading path, kept within
MODEL_CACHE_GB (the least recently used unloaded), the member told while their job waits for a load,
and the bot told which models the engine holds."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dreambot.models import Catalogue, Model, scan
from dreambot.request import GenerateRequest
from dreambot.settings import EngineSettings
from dreambot.wire import EngineError, GenerateResult, Job, Loaded, Progress
from engine.cache import ModelCache, ModelUnavailable, footprint
from engine.pipeline import Engine
from engine.server import HeldJobs, _run
from tests.support.models import tiny_sdxl_model


@pytest.fixture(scope="module")
def models_dir(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    shutil.copytree(tiny_model, folder / "tiny")
    shutil.copytree(tiny_sdxl_model(tmp_path_factory), folder / "xl")
    (folder / "models.toml").write_text('[models.tiny]\nclip_skip = 2\n', encoding="utf-8")
    shutil.copytree(tiny_model, folder / "broken")  # offered, as its configs say; its weights are not
    (folder / "broken" / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"\0" * 64)
    return folder


def cache_of(models_dir: Path, budget: int) -> tuple[ModelCache, list[str]]:
    settings = EngineSettings(sd_model="tiny", models_dir=models_dir, sd_safety_checker="opennsfw")
    loads: list[str] = []

    def load(model: Model) -> Engine:
        loads.append(model.name)
        return Engine.load(settings, model)

    catalogue = settings.catalogue()
    return ModelCache(lambda: catalogue, load, budget), loads


def test_models_load_on_first_use_and_the_least_recently_used_goes_first(models_dir: Path) -> None:
    cache, loads = cache_of(models_dir, budget=10**12)
    told: list[tuple[str, float | None]] = []
    tiny = cache.get("", lambda *said: told.append(said))  # "": the default (SD_MODEL)
    assert tiny.model == "tiny" and tiny.clip_skip == 2  # models.toml's defaults reach the engine
    assert cache.get("XL", lambda *said: told.append(said)).model == "xl"  # names in any case
    assert cache.get("tiny").model == "tiny" and loads == ["tiny", "xl"]  # both held: no reload
    assert [name for name, _ in told] == ["tiny", "xl"]
    assert cache.held == ("xl", "tiny")  # the most recently used last
    # A budget that holds one model: taking the other unloads the least recently used.
    small, small_loads = cache_of(models_dir, budget=footprint(tiny) + 1)
    small.get("tiny")
    small.get("xl", lambda *said: told.append(said))
    assert small.held == ("xl",)
    small.get("tiny", lambda *said: told.append(said))
    assert small.held == ("tiny",) and small_loads == ["tiny", "xl", "tiny"]
    assert told[-1][0] == "tiny" and told[-1][1] is not None  # how long it took the last time


def test_an_unknown_or_broken_model_fails_its_jobs_only(models_dir: Path) -> None:
    cache, loads = cache_of(models_dir, budget=10**12)
    cache.get("tiny")
    with pytest.raises(ModelUnavailable) as broken:
        cache.get("broken")
    assert str(broken.value) == ("The model “broken” could not be loaded; the server's operators can see why in the "
                                 "log.")  # no path, no traceback for members
    held = cache.held
    with pytest.raises(ModelUnavailable):  # refused at once for a while: nothing unloaded, nothing retried
        cache.get("broken")
    assert cache.held == held and loads.count("broken") == 1
    with pytest.raises(Exception, match="The model “nope” is no longer installed"):  # naming no other model
        cache.get("nope")


def test_the_server_says_when_a_job_waits_for_a_load_and_what_it_holds(models_dir: Path) -> None:
    cache, _ = cache_of(models_dir, budget=10**12)
    cache.get("")
    sent: list = []
    jobs = [Job(1, GenerateRequest(prompt="a fox", seed=1, num_inference_steps=2, model="xl"))]
    held = HeldJobs()
    held.hold(jobs)
    _run(cache, jobs, held, sent.append)
    assert sent[0] == Progress(job_id=1, step=0, total=2, loading="xl", seconds=None)
    assert Loaded(models=("tiny", "xl")) in sent
    [result] = [m for m in sent if isinstance(m, GenerateResult)]
    assert result.model == "xl"
    # Known now: no load, no Loaded.
    sent.clear()
    again = [Job(2, GenerateRequest(prompt="a fox", seed=1, num_inference_steps=2, model="xl"))]
    held.hold(again)
    _run(cache, again, held, sent.append)
    assert not any(isinstance(m, Loaded) or (isinstance(m, Progress) and m.loading) for m in sent)
    sent.clear()
    unknown = [Job(3, GenerateRequest(prompt="a fox", seed=1, model="nope"))]
    held.hold(unknown)
    _run(cache, unknown, held, sent.append)
    [error] = sent
    assert isinstance(error, EngineError) and error.kind == "invalid" and "nope" in error.message


def test_a_threshold_set_on_another_classifiers_scale_gives_way_to_this_ones_default(models_dir: Path) -> None:
    cache, _ = cache_of(models_dir, budget=10**12)
    engine = cache.get("tiny")  # open_nsfw: 0.05 to 0.95, default 0.5
    on_its_scale = GenerateRequest(prompt="a fox", nsfw_threshold=0.2, nsfw_scale="opennsfw")
    on_another = GenerateRequest(prompt="a fox", nsfw_threshold=0.08, nsfw_scale="checkpoint")
    assert engine.nsfw_threshold(on_its_scale) == 0.2 and engine.nsfw_threshold(on_another) == 0.5


def test_the_catalogue_offers_what_claims_to_be_a_model(models_dir: Path) -> None:
    catalogue: Catalogue = scan(models_dir, "tiny")
    assert [model.name for model in catalogue] == ["broken", "tiny", "xl"]  # "broken" fails only when loaded
    assert catalogue.default == "tiny"


def test_a_clip_skip_past_the_text_encoder_stops_the_load(models_dir: Path, tmp_path: Path) -> None:
    settings = EngineSettings(sd_model="tiny", models_dir=models_dir, sd_safety_checker="opennsfw")
    model = settings.catalogue().resolve("tiny")
    too_deep = Model(name=model.name, source=model.source, defaults=type(model.defaults)(clip_skip=3))
    with pytest.raises(Exception, match="clip_skip = 3 for tiny, whose text encoder has 2 layers"):
        Engine.load(settings, too_deep)
