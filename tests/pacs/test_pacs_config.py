"""The PACS node's configuration file: a bad key is refused with its name; routes; addresses."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from deepmia.cli.main import main
from deepmia.errors import InvalidArgumentError
from deepmia.pacs.config import Address, load_config, parse_address

GOOD = {
    "ae_title": "DEEPMIA", "port": 11112, "accept_calling_ae": ["ORTHANC"], "storage": "store",
    "settle_seconds": 2,
    "routes": [{"name": "hippo", "modality": "MR", "series_description": "(?i)hippo", "model": "hippocampus",
                "destinations": ["pacs"]}],
    "destinations": [{"name": "pacs", "dicom": "ORTHANC@localhost:4242"},
                     {"name": "web", "dicomweb": "http://localhost:8042/dicom-web"}],
    "retry": {"initial_seconds": 1, "max_seconds": 60},
}


def _write(tmp_path: Path, data) -> Path:
    path = tmp_path / "pacs.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def _with(change) -> dict:
    import copy

    data = copy.deepcopy(GOOD)
    change(data)
    return data


def test_a_good_config_loads_with_paths_resolved(tmp_path):
    config = load_config(_write(tmp_path, GOOD))
    assert config.storage == (tmp_path / "store").resolve()
    assert Path(config.routes[0].model).name == "hippocampus" and Path(config.routes[0].model).is_dir()
    assert config.destinations[0].address == Address("ORTHANC", "localhost", 4242)
    assert [d.name for d in config.destinations_of(config.routes[0])] == ["pacs"]


def test_the_shipped_example_loads():
    config = load_config(Path(__file__).resolve().parents[2] / "deepmia" / "pacs" / "example.yaml")
    assert config.routes and config.destinations


@pytest.mark.parametrize("change, key", [
    (lambda d: d.update(prot=104), "prot"),
    (lambda d: d["routes"][0].update(series_description="(unclosed"), "routes[0].series_description"),
    (lambda d: d["routes"][0].update(model="no_such_model_here"), "routes[0].model"),
    (lambda d: d["routes"][0].update(destinations=["nowhere"]), "routes[0].destinations"),
    (lambda d: d["destinations"][0].update(dicom="localhost:4242"), "destinations[0].dicom"),
    (lambda d: d["destinations"][1].update(dicom="A@b:1"), "destinations[1]"),
    (lambda d: d["retry"].update(initial_seconds=-1), "retry.initial_seconds"),
    (lambda d: d.update(port="eleven"), "port"),
    (lambda d: d.update(ae_title="A_TITLE_LONGER_THAN_16"), "ae_title"),
    (lambda d: d["routes"][0].pop("model"), "routes[0].model"),
])
def test_a_bad_key_is_refused_with_its_name(tmp_path, change, key):
    path = _write(tmp_path, _with(change))
    with pytest.raises(InvalidArgumentError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {key}"), message


def test_not_yaml_and_no_file_are_clear_errors(tmp_path):
    with pytest.raises(InvalidArgumentError, match="not valid YAML"):
        load_config(_write(tmp_path, "routes: [unclosed\n"))
    with pytest.raises(InvalidArgumentError, match="no such configuration file"):
        load_config(tmp_path / "missing.yaml")


def test_listen_with_a_bad_config_exits_2_naming_the_key(tmp_path, capsys):
    path = _write(tmp_path, _with(lambda d: d["routes"][0].update(series_description="[")))
    assert main(["pacs", "listen", "--config", str(path), "--db", str(tmp_path / "c.sqlite")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "routes[0].series_description" in err[0] and "regular expression" in err[0]


def test_routes_match_modality_body_part_and_description(tmp_path):
    data = _with(lambda d: d["routes"].insert(0, {"name": "ct-chest", "modality": ["CT"], "body_part": "chest",
                                                   "model": "hippocampus"}))
    config = load_config(_write(tmp_path, data))
    hippo = {"Modality": "MR", "BodyPartExamined": "", "SeriesDescription": "HippoCrop"}
    chest = {"Modality": "ct", "BodyPartExamined": "CHEST", "SeriesDescription": "anything"}
    assert config.route_for(hippo).name == "hippo"
    assert config.route_for(chest).name == "ct-chest"
    assert config.route_for({**chest, "BodyPartExamined": "HEAD"}) is None
    assert config.route_for({**hippo, "SeriesDescription": "T1 post"}) is None


@pytest.mark.parametrize("text", ["ORTHANC@localhost", "@host:1", "A@host:70000", "A@host:port", "nohost"])
def test_a_bad_address_is_refused(text):
    with pytest.raises(InvalidArgumentError):
        parse_address(text)


def test_retry_backs_off_exponentially_up_to_the_cap(tmp_path):
    retry = load_config(_write(tmp_path, GOOD)).retry
    assert [retry.delay(n) for n in (1, 2, 3, 4)] == [1, 2, 4, 8]
    assert retry.delay(20) == 60
