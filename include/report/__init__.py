"""The run report: `tables` (numbers as rows of text), `figures` (matplotlib PNGs) and `render`
(Jinja2 templates in `templates/`: report.md, report.html and the reports page share one layout)."""
