"""A study's report opened on a machine with no network: plots carry plotly's code, and come as PNG too."""
import re

from PIL import Image
from plotly.offline import get_plotlyjs_version

from search.space import Space
from search.study import run_study
from search.summary import PLOTS, write_report
from test_search import args_for, data, fake_train


def test_plots_open_offline_as_html_and_png(tmp_path):
    study = run_study(args_for(f"sqlite:///{tmp_path / 'studies.db'}", tmp_path, "--trials", "4"),
                      Space.for_family("t5"), data(tmp_path), "report", train_fn=fake_train)
    folder = tmp_path / "report"
    write_report(study, folder)
    for name in PLOTS:
        html = (folder / f"{name}.html").read_text(encoding="utf-8")
        assert not re.search(r"<script[^>]*\bsrc=", html), f"{name}.html loads a script from elsewhere"
        assert f"plotly.js v{get_plotlyjs_version()}" in html  # the library itself, inside the file
        with Image.open(folder / f"{name}.png") as image:
            assert image.format == "PNG" and image.width > 0 and image.height > 0
            darkest, lightest = image.convert("L").getextrema()
            assert darkest < lightest, f"{name}.png is one flat colour"
