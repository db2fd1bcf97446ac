# The project image for docker-compose.yaml: the slim official Airflow image (Airflow without the
# provider bundle) plus this project's pinned run-time requirements, installed at build time (never
# _PIP_ADDITIONAL_REQUIREMENTS, which reinstalls on every container start and drifts). The code
# (dags/, tasks/, include/, plugins/) is mounted. Test-only packages (requirements-test.txt) stay out.
# Python 3.11: constraints.txt is the resolved set of a Python 3.11 install.
# AIRFLOW_BASE_IMAGE: another Airflow 3.3 image honouring the official contract (`make e2e-compose`
# builds FROM a local stand-in; see docs/deployment.md).
ARG AIRFLOW_BASE_IMAGE=apache/airflow:slim-3.3.2-python3.11
FROM ${AIRFLOW_BASE_IMAGE}

COPY --chown=airflow:0 requirements.txt constraints.txt /opt/airflow/project/
# apache-airflow pinned to the base image's own version in the same install, so pip can never
# up- or downgrade Airflow under the image. requirements.txt carries the platform markers
# (tensorflow-cpu has no aarch64 wheel: arm64 builds get tensorflow). `pip check`: no broken set ships.
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" \
      -r /opt/airflow/project/requirements.txt -c /opt/airflow/project/constraints.txt \
 && pip check
