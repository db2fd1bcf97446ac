"""Config validation: the same rules as the Params form, in plain Python."""

from datetime import date

import pytest

from include.config import CLASS_NAMES, ConfigError, ExperimentConfig


def test_defaults_are_the_seeds_recipe():
    c = ExperimentConfig()
    assert c.target_classes == ("Pullover", "T-shirt/top") and c.pretrain_classes == ()
    assert (c.data_format, c.image_size, c.test_share) == ("auto", (), None)
    assert (c.pretrain_epochs, c.scratch_epochs, c.head_epochs, c.finetune_epochs) == (20, 20, 10, 50)
    assert c.batch_size == 32 and c.pretrain_lr == c.finetune_lr == 1e-3
    assert (c.pretrain_val_size, c.target_val_size, c.split_random_state) == (5000, 3000, 42)
    assert 0.7 in c.fractions and 42 in c.seeds and len(c.seeds) == 5
    assert c.scratch_fractions[-1] == 1.0


@pytest.mark.parametrize("changes, needle", [
    ({"target_classes": ["Pullover", ""]}, "target_classes"),
    ({"pretrain_classes": ["Bag"]}, "needs at least two"),
    ({"pretrain_classes": ["Bag", "Pullover"]}, "both name ['Pullover']"),
    ({"pretrain_classes": ["Bag", "Bag"]}, "same class twice"),
    ({"image_size": [28]}, "image_size must be [height, width]"),
    ({"image_size": [28, 0]}, "image_size"),
    ({"test_share": 1.0}, "test_share"),
    ({"target_classes": ["Pullover", "Pullover"]}, "same class twice"),
    ({"target_classes": ["Pullover"]}, "exactly two"),
    ({"fractions": [0.0]}, "outside (0, 1]"),
    ({"fractions": [1.5]}, "outside (0, 1]"),
    ({"fractions": []}, "fractions is empty"),
    ({"seeds": []}, "seeds is empty"),
    ({"seeds": [1, 1]}, "duplicates"),
    ({"seeds": [1.5]}, "integers"),
    ({"seeds": ["7"]}, "integers"),
    ({"head_epochs": 0}, "head_epochs must be an integer >= 1"),
    ({"finetune_lr": 0}, "finetune_lr must be a positive number"),
    ({"scratch_lr": -1e-3}, "scratch_lr must be a positive number"),
    ({"batch_size": 0}, "batch_size must be an integer >= 1"),
    ({"noninferiority_margin": -0.1}, "noninferiority_margin"),
    ({"bogus": 1}, "Unknown setting"),
])
def test_invalid_values_are_rejected_with_a_clear_message(changes, needle):
    params = {**ExperimentConfig().to_dict(), **changes}
    with pytest.raises(ConfigError) as err:
        ExperimentConfig.from_params(params)
    assert needle in str(err.value)


def test_from_params_round_trip_and_empty_data_dir():
    c = ExperimentConfig.from_params({**ExperimentConfig().to_dict(), "data_dir": "", "seeds": [3]})
    assert c.data_dir is None and c.seeds == (3,)
    assert ExperimentConfig.from_params(c.to_dict()) == c


def test_class_names_map_to_the_data_labels():
    from include.data.splits import class_labels

    names = ("a", "b", "c", "d")
    assert class_labels(("c", "a"), (), names) == ((2, 0), (1, 3))
    assert class_labels(("c", "a"), ("d", "b"), names) == ((2, 0), (3, 1))
    with pytest.raises(ConfigError, match=r"Unknown class name 'x' in target_classes.*Choose two of \['a'"):
        class_labels(("x", "a"), (), names)
    with pytest.raises(ConfigError, match="Unknown class name 'z' in pretrain_classes"):
        class_labels(("a", "b"), ("c", "z"), names)
    with pytest.raises(ConfigError, match="Only 1 class"):
        class_labels(("a", "b"), (), names[:3])


def test_class_names_are_the_published_order():
    assert CLASS_NAMES[0] == "T-shirt/top" and CLASS_NAMES[2] == "Pullover" and len(CLASS_NAMES) == 10


@pytest.mark.parametrize("changes, needle", [
    ({"seeds": list(range(1025))}, "at most 1024 fit Airflow's [core] max_map_length"),
    ({"fractions": [i / 2000 for i in range(1, 1026)]}, "fractions has 1025 values; at most 1024"),
    ({"seeds": list(range(21))}, "would train 210 models (21 seeds x 10 per seed), more than max_models_per_run=200"),
    ({"max_models_per_run": 0}, "max_models_per_run must be an integer >= 1, got 0"),
])
def test_fan_out_is_bounded(changes, needle):
    with pytest.raises(ConfigError) as err:
        ExperimentConfig.from_params({**ExperimentConfig().to_dict(), **changes})
    assert needle in str(err.value)


def test_default_run_fits_the_model_cap():
    c = ExperimentConfig()
    assert len(c.seeds) * c.models_per_seed == 50 <= c.max_models_per_run
    assert ExperimentConfig(seeds=list(range(20))).models_per_seed == 10  # 200 models: exactly the cap


@pytest.mark.parametrize("changes, needle", [
    ({"scratch_lr": 11}, "scratch_lr must be a number <= 10, got 11 (allowed: (0, 10]). The seed uses 0.001."),
    ({"confidence": 1}, "confidence must be a number < 0.999, got 1 (allowed: (0.5, 0.999))."),
    ({"verify_checksums": "yes"}, "verify_checksums must be true or false, got 'yes'."),
    ({"data_dir": "  "}, "data_dir must be a folder path or empty, got '  '."),
    ({"seeds": [True]}, "seeds must be integers, got True."),
    ({"fractions": [0.3, float("nan")]}, "fraction nan is outside (0, 1]."),
    ({"history_window": 1.5}, "history_window must be an integer, got 1.5."),
])
def test_messages_come_from_the_declaration(changes, needle):
    with pytest.raises(ConfigError) as err:
        ExperimentConfig(**changes)
    assert needle in str(err.value)


def test_form_and_validation_share_one_declaration():
    """Every setting's form entry (default, description, section, bounds) is generated from the model."""
    from tasks.dag_params import param_specs

    specs, fields = param_specs(), ExperimentConfig.model_fields
    assert list(specs) == list(fields)
    for name, spec in specs.items():
        assert spec["description"].startswith(fields[name].description) and spec["section"]
        assert spec["default"] == ExperimentConfig().to_dict()[name]
    assert specs["scratch_lr"]["schema"] == {"type": "number", "exclusiveMinimum": 0, "maximum": 10}
    assert specs["data_dir"]["schema"] == {"type": ["null", "string"]}
    assert specs["seeds"]["schema"]["maxItems"] == specs["fractions"]["schema"]["maxItems"] == 1024


def test_typed_seeds_in_the_nightly_reserved_range_are_refused_at_the_form_and_at_run_time():
    from airflow.sdk.exceptions import ParamValidationError

    from include.seeding import FIRST_DRAWN, SeedingError, run_seeds
    from tasks.dag_params import build_params, param_specs

    seeds = build_params()["seeds"]
    assert seeds.resolve([1, FIRST_DRAWN - 1]) == [1, FIRST_DRAWN - 1]
    with pytest.raises(ParamValidationError, match="1000000 is greater than the maximum of 999999"):
        seeds.resolve([1, FIRST_DRAWN])
    assert "seeds 1,000,000 to 2,147,483,647 are reserved" in param_specs()["seeds"]["description"]
    # A conf that reaches the run around the form (the REST API without params validation, a plain call).
    with pytest.raises(SeedingError, match=r"seeds \[1000001\] cannot be typed: seeds 1,000,000 to 2,147,483,647"):
        run_seeds([1, FIRST_DRAWN + 1], "manual", None)
    assert run_seeds([3], "scheduled", date(2026, 12, 7))[0] >= FIRST_DRAWN  # a night draws from there
