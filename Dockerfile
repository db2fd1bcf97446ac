# The project image for docker-compose.yaml: the official Airflow image plus this project's pinned
# requirements, installed at build time (never _PIP_ADDITIONAL_REQUIREMENTS, which reinstalls on
# every container start and drifts). The code (dags/, tasks/, include/, plugins/) is mounted.
# Python 3.11: constraints.txt is the resolved set of a Python 3.11 install.
FROM apache/airflow:3.3.2-python3.11

COPY --chown=airflow:0 requirements.txt constraints.txt /opt/airflow/project/
RUN pip install --no-cache-dir -r /opt/airflow/project/requirements.txt -c /opt/airflow/project/constraints.txt
