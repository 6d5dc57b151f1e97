"""`@configurable`: the same constructor called explicitly or from a config."""
import pytest

from d2mask.config import ArgumentError, config_keys, configurable, get_cfg


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


class Part:
    """A part built from different keys in different places: it names its argument, not a key."""

    @configurable
    def __init__(self, *, low: float, high: float):
        if not low < high:
            raise ArgumentError(f"Part `high` {high} must be above `low` {low}", "high", "low")

    @classmethod
    def from_config(cls, cfg, stage_cfg):
        low, high = stage_cfg.IOU_THRESHOLDS
        return {"low": low, "high": high}


def test_config_keys_names_the_full_key_of_a_part_built_from_a_config_node():
    from d2mask.config import ConfigError

    cfg = get_cfg()
    cfg.MODEL.ROI_HEADS.IOU_THRESHOLDS = [0.6, 0.4]
    with pytest.raises(ValueError) as explicit:
        Part(low=0.6, high=0.4)
    assert str(explicit.value) == "Part high 0.4 must be above low 0.6"
    with pytest.raises(ConfigError) as keyed:
        with config_keys(high="MODEL.ROI_HEADS.IOU_THRESHOLDS[1]", low="MODEL.ROI_HEADS.IOU_THRESHOLDS[0]"):
            Part(cfg, cfg.MODEL.ROI_HEADS)
    assert str(keyed.value) == "Part MODEL.ROI_HEADS.IOU_THRESHOLDS[1] 0.4 must be above MODEL.ROI_HEADS.IOU_THRESHOLDS[0] 0.6"


def test_the_innermost_config_keys_names_the_key_and_others_pass_it_on():
    from d2mask.config import ConfigError

    with pytest.raises(ConfigError) as error:
        with config_keys(high="MODEL.RPN.X"):  # an enclosing builder using the same argument name
            with config_keys(high="MODEL.ROI_HEADS.X"):
                Part(low=1.0, high=0.0)
    assert str(error.value) == "Part MODEL.ROI_HEADS.X 0.0 must be above low 1.0"
    with pytest.raises(ArgumentError):  # an argument the block does not name stays as it is
        with config_keys(other="MODEL.RPN.X"):
            Part(low=1.0, high=0.0)
