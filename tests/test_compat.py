"""The supported torch and transformers range, checked at import with an error naming the fix."""

from __future__ import annotations

import pytest

from specrepro.compat import MINIMUM, UnsupportedVersionError, check_versions


def test_the_installed_versions_are_supported() -> None:
    check_versions()


def test_a_transformers_before_the_cache_keyword_is_refused_by_name() -> None:
    with pytest.raises(UnsupportedVersionError) as err:
        check_versions({"torch": "2.11.0+cu130", "transformers": "5.17.0"})
    message = str(err.value)
    assert "transformers 5.17.0 is older than 5.24" in message
    assert "`cache=`" in message
    assert "torch" not in message.split(";")[0].replace("transformers", "")


def test_an_old_torch_and_a_too_new_transformers_are_both_named() -> None:
    with pytest.raises(UnsupportedVersionError) as err:
        check_versions({"torch": "2.10.1", "transformers": "5.40.0"})
    assert "torch 2.10.1 is older than 2.11" in str(err.value)
    assert "transformers 5.40.0 is not below 5.40" in str(err.value)


def test_local_and_pre_release_tags_compare_by_release() -> None:
    check_versions({"torch": "2.11.0+cu130", "transformers": "5.24.0.dev0"})
    assert set(MINIMUM) == {"torch", "transformers"}
