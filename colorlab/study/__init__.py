"""Human studies of realism (Zhang et al. 2016's real-vs-fake test; seeds 001 and 004).

create (design.py, create.py) -> the database (db.py) -> serve (server.py, static/study.html)
-> report (report.py). The command is ``python -m colorlab.study``.
"""
