"""The step machinery: parsing, validation errors, label refusal, composition."""

from __future__ import annotations

import numpy as np
import pytest

from deepmia.errors import InvalidArgumentError
from deepmia.processing import all_steps, apply_steps, parse_step, resolve_steps, steps


def test_parse_step_handles_lists_and_plain_values():
    assert parse_step("gaussian") == ("gaussian", {})
    assert parse_step("gaussian:sigma=1.5,truncate=3") == ("gaussian", {"sigma": "1.5", "truncate": "3"})
    assert parse_step("resample:spacing=[1,1,3],interpolation=cubic") == (
        "resample",
        {"spacing": [1, 1, 3], "interpolation": "cubic"},
    )
    assert parse_step("region_grow:seeds=[[1,2,3],[4,5,6]]")[1]["seeds"] == [[1, 2, 3], [4, 5, 6]]


def test_parse_step_rejects_items_without_equals():
    with pytest.raises(InvalidArgumentError, match="not key=value"):
        parse_step("gaussian:sigma")


def test_unknown_step_lists_valid_names_and_closest():
    with pytest.raises(InvalidArgumentError) as err:
        resolve_steps(["gausian:sigma=1"])
    msg = str(err.value)
    assert "did you mean 'gaussian'" in msg
    for name in ("median", "otsu", "resample", "clahe"):
        assert name in msg


def test_bad_parameter_value_names_the_allowed_range():
    with pytest.raises(InvalidArgumentError, match=r"sigma=.*allowed: a number in \[0, 1000\]"):
        resolve_steps(["gaussian:sigma=-1"])
    with pytest.raises(InvalidArgumentError, match="one of 'ideal', 'butterworth', 'gaussian'"):
        resolve_steps(["lowpass:kind=box"])
    with pytest.raises(InvalidArgumentError, match="an integer"):
        resolve_steps(["median:radius=1.5"])


def test_unknown_parameter_suggests_the_closest():
    with pytest.raises(InvalidArgumentError, match="did you mean 'sigma'"):
        resolve_steps(["gaussian:sigmaa=1"])
    with pytest.raises(InvalidArgumentError, match="takes no parameters"):
        resolve_steps(["li:x=1"])


def test_all_steps_validate_before_any_runs(noisy_volume, monkeypatch):
    import dataclasses

    calls = []
    spec = steps.get("gaussian")
    recording = dataclasses.replace(spec, func=lambda image, **kw: calls.append(kw) or image)
    monkeypatch.setitem(steps._items, "gaussian", recording)
    apply_steps(noisy_volume, ["gaussian:sigma=1"])
    assert calls == [{"sigma": 1.0, "truncate": 4.0}]
    with pytest.raises(InvalidArgumentError):
        apply_steps(noisy_volume, ["gaussian:sigma=1", "nosuchstep"])
    assert len(calls) == 1


def test_intensity_only_step_refuses_label_image(label_volume):
    with pytest.raises(InvalidArgumentError, match="refuses a label image"):
        apply_steps(label_volume, ["gaussian:sigma=1"])
    intensity_only = [s.name for s in all_steps() if not s.accepts_labels]
    assert {"gaussian", "median", "clahe", "otsu", "window"} <= set(intensity_only)
    for name in ("resample", "dilate", "largest_component", "reorient"):
        assert steps.get(name).accepts_labels


def test_direct_call_validates_too(noisy_volume):
    from deepmia.processing.filters import gaussian

    with pytest.raises(InvalidArgumentError, match="allowed"):
        gaussian(noisy_volume, sigma=-2)
    with pytest.raises(InvalidArgumentError, match="needs an Image"):
        gaussian(noisy_volume.array, sigma=1)


def test_steps_compose_in_order(noisy_volume):
    from deepmia.processing.filters import gaussian
    from deepmia.processing.segmentation import otsu

    piped = apply_steps(noisy_volume, ["gaussian:sigma=2", "otsu"])
    direct = otsu(gaussian(noisy_volume, sigma=2.0))
    np.testing.assert_array_equal(piped.array, direct.array)
    assert piped.kind == "label"


def test_every_step_has_a_description():
    for spec in all_steps():
        text = spec.describe()
        assert text.startswith(spec.name)
        for key in spec.params.model_fields:
            assert key in text


def test_repeated_calls_validate_every_time_and_keep_types(noisy_volume):
    from deepmia.processing import filters, spatial

    for _ in range(2):  # the second call takes the cached validation: it must still refuse and convert
        with pytest.raises(InvalidArgumentError, match="radius"):
            filters.mean(noisy_volume, radius=-1)
        with pytest.raises(InvalidArgumentError, match="radius"):
            filters.mean(noisy_volume, radius=1.5)
    # 2 and 2.0 hash alike; each must be validated for its own type (2.0 -> int 2 for an int parameter)
    a = spatial.pad(noisy_volume, margin=2)
    b = spatial.pad(noisy_volume, margin=2.0)
    assert a.spatial_shape == b.spatial_shape == tuple(n + 4 for n in noisy_volume.spatial_shape)
    with pytest.raises(InvalidArgumentError, match="margin"):
        spatial.pad(noisy_volume, margin=2.5)
