"""Registry errors name the registry, every registered name, the nearest one, and both places."""
import pytest

from d2mask.utils.registry import Registry, RegistryError


def test_unknown_name_lists_names_and_nearest():
    reg = Registry("ANCHOR_MATCHER")

    @reg.register()
    class Matcher:
        pass

    @reg.register()
    class ATSSMatcher:
        pass

    assert reg.get("Matcher") is Matcher
    with pytest.raises(RegistryError) as e:
        reg.get("Matchr")
    message = str(e.value)
    assert "ANCHOR_MATCHER" in message and "'Matchr'" in message
    assert "Did you mean 'Matcher'?" in message and "ATSSMatcher, Matcher" in message
    assert isinstance(e.value, KeyError)


def test_registering_a_name_twice_names_both_places():
    reg = Registry("SAMPLER")

    @reg.register()
    class RandomSampler:
        pass

    with pytest.raises(RegistryError) as e:
        reg.register(type("RandomSampler", (), {"__module__": "projects.other"}))
    assert "registered twice" in str(e.value) and "RandomSampler" in str(e.value)
    assert "test_registry" in str(e.value) and "projects.other" in str(e.value)
    assert reg.get("RandomSampler") is RandomSampler
