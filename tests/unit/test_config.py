"""Config validation: the same rules as the Params form, in plain Python."""

import pytest

from include.config import CLASS_NAMES, ConfigError, ExperimentConfig


def test_defaults_are_the_seeds_recipe():
    c = ExperimentConfig()
    assert c.target_classes == ("Pullover", "T-shirt/top") and c.target_labels == (2, 0)
    assert (c.pretrain_epochs, c.scratch_epochs, c.head_epochs, c.finetune_epochs) == (20, 20, 10, 50)
    assert c.batch_size == 32 and c.pretrain_lr == c.finetune_lr == 1e-3
    assert (c.pretrain_val_size, c.target_val_size, c.split_random_state) == (5000, 3000, 42)
    assert 0.7 in c.fractions and 42 in c.seeds and len(c.seeds) == 5
    assert c.pretrain_labels == (1, 3, 4, 5, 6, 7, 8, 9)
    assert c.scratch_fractions[-1] == 1.0


@pytest.mark.parametrize("changes, needle", [
    ({"target_classes": ["Pullover", "Jacket"]}, "Unknown class name 'Jacket'"),
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


def test_class_names_are_the_published_order():
    assert CLASS_NAMES[0] == "T-shirt/top" and CLASS_NAMES[2] == "Pullover" and len(CLASS_NAMES) == 10
