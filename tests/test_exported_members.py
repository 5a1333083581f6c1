"""The public face: every name in ``__all__`` resolves and nothing public is missing from it, for
``wgtlab`` and each layer package that names its own (after httpx's test_exported_members.py)."""

from __future__ import annotations

import importlib
import types

import pytest

import wgtlab

PACKAGES = [
    "wgtlab",
    "wgtlab.errors",
    "wgtlab.ces",
    "wgtlab.verify",
    "wgtlab.trust",
    "wgtlab.sandbox",
    "wgtlab.frame",
]


def is_module(value: object) -> bool:
    return isinstance(value, types.ModuleType)


def public_names(module: types.ModuleType) -> set[str]:
    """What a user sees in ``module``: no private names, no submodule that an import happened to
    bind there, no ``from __future__`` directive."""
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not is_module(value)
        and type(value).__module__ != "__future__"
    }


@pytest.mark.parametrize("package", PACKAGES)
def test_every_exported_name_resolves(package: str) -> None:
    module = importlib.import_module(package)
    assert len(module.__all__) == len(set(module.__all__)), "a name is listed twice"
    unresolved = [name for name in module.__all__ if not hasattr(module, name)]
    assert unresolved == []


@pytest.mark.parametrize("package", PACKAGES)
def test_nothing_public_is_missing_from_all(package: str) -> None:
    module = importlib.import_module(package)
    # Lazy names enter the namespace on first use: use them all, so none can hide.
    for name in [*module.__all__, *getattr(module, "_LAZY", {})]:
        getattr(module, name)
    exported = {
        name
        for name in module.__all__
        if not name.startswith("_") and not is_module(getattr(module, name))
    }
    assert sorted(public_names(module) - exported) == [], "public but not in __all__"
    assert sorted(exported - public_names(module)) == [], "in __all__ but not public"


def test_the_lazy_table_and_dir_follow_all() -> None:
    assert sorted(set(wgtlab._LAZY) - set(wgtlab.__all__)) == []
    assert dir(wgtlab) == sorted(wgtlab.__all__)


def test_every_error_and_warning_is_public_at_the_top_level() -> None:
    from wgtlab import errors

    classes = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, (errors.WgtError, errors.WgtWarning))
    }
    assert sorted(classes - set(wgtlab.__all__)) == []
    assert wgtlab.SubscriberWarning is errors.SubscriberWarning
