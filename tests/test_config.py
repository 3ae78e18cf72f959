from pathlib import Path

import pytest

from synthvlp.config import RunConfig, apply_override, diff_configs, dump_yaml, load_config
from synthvlp.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def test_defaults_validate_and_quickstart_loads():
    config = load_config(REPO / "configs" / "quickstart.yaml")
    assert config.run.n_samples >= 2000
    assert RunConfig().plan.findings


def test_overrides_are_parsed_as_yaml_values():
    config = load_config(None, ["run.n_samples=500", "plan.findings=[cardiomegaly, nodule]", "plan.max_findings=1"])
    assert config.run.n_samples == 500
    assert config.plan.findings == ["cardiomegaly", "nodule"]


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("run:\n  n_sampels: 5\n", "run.n_sampels: unknown key; expected one of: executor, n_samples"),
        ("run:\n  n_samples: many\n", "run.n_samples = 'many'"),
        ("run:\n  test_fraction: 1.5\n", "run.test_fraction = 1.5: Input should be less than 1"),
        ("plan:\n  min_findings: 3\n  max_findings: 1\n", "min_findings (3) must not exceed max_findings (1)"),
        ("colour: blue\n", "colour: unknown key; expected one of: balance, evaluate"),
        ("- just\n- a list\n", "expected a mapping of sections"),
    ],
)
def test_invalid_values_name_file_key_and_value(tmp_path, yaml_text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(path) in str(caught.value)
    assert expected in str(caught.value)


def test_malformed_yaml_names_line_and_column(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("run:\n  seed: 1\n  name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken.yaml line \d+, column \d+: malformed YAML"):
        load_config(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_override_errors():
    with pytest.raises(ConfigError, match="not of the form key.path=value"):
        load_config(None, ["run.seed"])
    data = {"run": {"seed": 1}}
    with pytest.raises(ConfigError, match="run.seed is a value, not a section"):
        apply_override(data, "run.seed.x=2")
    with pytest.raises(ConfigError, match=r"command-line overrides(.|\n)*run.seed = -1"):
        load_config(None, ["run.seed=-1"])


def test_diff_and_dump_round_trip(tmp_path):
    config = load_config(None, ["run.seed=5"])
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_yaml(config))
    assert load_config(path) == config
    assert diff_configs(RunConfig().to_plain(), config.to_plain()) == ["run.seed: 0 -> 5"]


def test_a_config_extends_a_base_and_overrides_it_key_by_key(tmp_path):
    (tmp_path / "base.yaml").write_text("run:\n  seed: 3\n  n_samples: 50\npretrain:\n  epochs: 7\n  lr: 0.01\n")
    (tmp_path / "real.yaml").write_text("extends: base.yaml\nrun:\n  n_samples: 20\npretrain:\n  lr: 0.002\n")
    config = load_config(tmp_path / "real.yaml", ["pretrain.epochs=2"])
    assert (config.run.seed, config.run.n_samples, config.pretrain.epochs, config.pretrain.lr) == (3, 20, 2, 0.002)


def test_extends_cycles_and_missing_bases_are_named(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="leads back"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("extends: missing.yaml\n")
    with pytest.raises(ConfigError, match="missing.yaml: config file not found"):
        load_config(tmp_path / "c.yaml")


@pytest.mark.parametrize("path", sorted(p.relative_to(REPO) for p in (REPO / "configs").rglob("*.yaml") if p.name != "rasd-2d.yaml" and not p.name.startswith("render-")))
def test_every_shipped_run_config_loads(path):
    config = load_config(REPO / path)
    if path.parent.name == "syncxr" and path.name != "base.yaml":  # the table's recipes share the base's training and renderer
        assert (config.pretrain.model, config.pretrain.max_steps, config.pretrain.targets) == ("synthvlp-cnn-tiny", 500, "labels")
        assert config.images.phantom == "projection"
        assert str(config.run.out_dir).startswith("runs/syncxr/")


def test_one_mark_says_which_settings_fingerprints_leave_out():
    """Incidental settings (no output depends on them) are left out of stage fingerprints, the run folder's
    config check and training state keys; operational ones only out of the state keys."""
    from synthvlp.config import INCIDENTAL, OPERATIONAL, Section, fingerprinted, incidental, marked, operational, output_differences

    assert marked(RunConfig, INCIDENTAL) == [("run", "name"), ("run", "out_dir"), ("run", "executor"), ("run", "ray"), ("plan", "source_corpus")]
    assert set(marked(RunConfig, INCIDENTAL)) < set(marked(RunConfig, OPERATIONAL))  # incidental is operational too
    base = load_config(None, [])
    moved = load_config(None, ["run.name=x", "run.out_dir=/elsewhere", "run.executor=ray", "run.ray.actors=5", "plan.source_corpus=c.csv"])
    assert fingerprinted(moved) == fingerprinted(base) and "run" in fingerprinted(base) and "seed" in fingerprinted(base)["run"]
    assert output_differences(base.to_plain(), moved.to_plain()) == []
    assert output_differences(base.to_plain(), load_config(None, ["pretrain.threads=2"]).to_plain()) == ["pretrain.threads: None -> 2"]

    class Inner(Section):
        where: str = incidental("here")
        cadence: int = operational(1)

    class Outer(Section):
        inner: Inner | None = None  # a mark inside an optional section is found too

    assert marked(Outer, INCIDENTAL) == [("inner", "where")] and marked(Outer, OPERATIONAL) == [("inner", "where"), ("inner", "cadence")]
