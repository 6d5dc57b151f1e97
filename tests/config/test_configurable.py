"""`@configurable`: the same constructor called explicitly or from a config."""
import pytest

from d2mask.config import configurable, get_cfg


class Head:
    @configurable
    def __init__(self, *, channels: int, beta: float = 0.0):
        self.channels, self.beta = channels, beta

    @classmethod
    def from_config(cls, cfg, channels):
        return {"channels": channels, "beta": cfg.MODEL.RPN.SMOOTH_L1_BETA}


def test_explicit_and_config_construction_agree():
    cfg = get_cfg()
    cfg.MODEL.RPN.SMOOTH_L1_BETA = 0.25
    from_cfg = Head(cfg, 8)
    explicit = Head(channels=8, beta=0.25)
    assert (from_cfg.channels, from_cfg.beta) == (explicit.channels, explicit.beta) == (8, 0.25)


def test_keyword_overrides_what_from_config_returns():
    head = Head(get_cfg(), channels=4, beta=9.0)
    assert (head.channels, head.beta) == (4, 9.0)


def test_configurable_function():
    def _from_config(cfg, scale):
        return {"lr": cfg.SOLVER.BASE_LR * scale}

    @configurable(from_config=_from_config)
    def make(*, lr):
        return lr

    assert make(lr=0.5) == 0.5
    assert make(get_cfg(), scale=10) == pytest.approx(0.01)


class Checked:
    @configurable
    def __init__(self, *, beta: float):
        if beta < 0:
            raise ValueError(f"Checked beta (MODEL.RPN.SMOOTH_L1_BETA) must be >= 0, got {beta}")

    @classmethod
    def from_config(cls, cfg):
        return {"beta": cfg.MODEL.RPN.SMOOTH_L1_BETA}


def test_constructor_validation_is_a_config_error_when_built_from_a_config():
    """The value came from a config key, so it is the user's error (one line from train_net)."""
    from d2mask.config import ConfigError

    cfg = get_cfg()
    cfg.MODEL.RPN.SMOOTH_L1_BETA = -1.0
    with pytest.raises(ConfigError, match=r"MODEL.RPN.SMOOTH_L1_BETA\) must be >= 0, got -1.0"):
        Checked(cfg)
    with pytest.raises(ValueError) as explicit:
        Checked(beta=-1.0)
    assert not isinstance(explicit.value, ConfigError)


class Outer:
    """Builds a `Checked` in its from_config, as a head builds its parts."""

    @configurable
    def __init__(self, *, part):
        self.part = part

    @classmethod
    def from_config(cls, cfg):
        return {"part": Checked(beta=cfg.MODEL.RPN.SMOOTH_L1_BETA)}


def test_a_part_built_in_from_config_is_a_config_error_naming_the_class():
    from d2mask.config import ConfigError

    cfg = get_cfg()
    cfg.MODEL.RPN.SMOOTH_L1_BETA = -1.0
    with pytest.raises(ConfigError) as error:
        Outer(cfg)
    assert str(error.value) == "Outer (from the config): Checked beta (MODEL.RPN.SMOOTH_L1_BETA) must be >= 0, got -1.0"
