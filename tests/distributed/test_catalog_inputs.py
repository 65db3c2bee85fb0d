"""deepmia batch predict over a catalog query: predictions recorded in the catalog once, however often it runs."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from deepmia.data.catalog import open_catalog, scan
from deepmia.data.catalog.models import Job, Prediction
from deepmia.distributed import batch_predict

pytestmark = pytest.mark.shared_data


def test_a_catalog_query_predicts_its_series_and_records_each_prediction_once(shared_data, tmp_path):
    db = str(tmp_path / "catalog.sqlite")
    with open_catalog(db) as catalog:
        scan(catalog, shared_data / "dicom" / "mr_study" / "Study3" / "11_HCropVolume", workers=1)
        (series,) = catalog.series()
    out = tmp_path / "out"
    first = batch_predict("hippocampus", f"series={series['series_uid']}", out, db=db, options={"tta": False})
    assert first.predicted == [series["series_uid"]] and first.catalog == {"added": 1, "not_in_catalog": 0}
    assert (out / f"{series['series_uid']}.nii.gz").is_file()
    again = batch_predict("hippocampus", f"series={series['series_uid']}", out, db=db, options={"tta": False})
    assert again.resumed == 1 and again.catalog["added"] == 0
    with open_catalog(db) as catalog, catalog.session() as s:
        rows = s.scalars(select(Prediction)).all()
        assert len(rows) == 1 and rows[0].task == "segment" and rows[0].model.startswith("hippocampus@")
        assert rows[0].path == str((out / f"{series['series_uid']}.nii.gz").resolve())
        assert any(k.endswith("volume") for k in rows[0].scores)
        jobs = s.scalars(select(Job).where(Job.kind == "batch_predict")).all()
        assert [j.status for j in jobs] == ["done", "done"] and jobs[1].result["resumed"] == 1
        assert s.scalar(select(func.count(Prediction.id))) == 1
