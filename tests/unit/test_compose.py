"""No Docker here: parse docker-compose.yml and check it agrees with the code and infra/."""

import re
from pathlib import Path

import yaml

from pipeline.settings import REPO_ROOT, Settings

COMPOSE = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
COMMON = (REPO_ROOT / "infra" / "common.sh").read_text()


def infra_default(var: str) -> int:
    m = re.search(rf"^{var}=\$\{{{var}:-(\d+)\}}", COMMON, re.M)
    assert m, f"{var} not found in infra/common.sh"
    return int(m.group(1))


def test_gpumeter_services_use_the_topics_and_database_of_the_code() -> None:
    s = Settings()
    for name in ("init", "topics", "worker", "api"):
        env = COMPOSE["services"][name]["environment"]
        assert env["GPUMETER_USAGE_TOPIC"] == s.usage_topic
        assert env["GPUMETER_DLQ_TOPIC"] == s.dlq_topic
        assert int(env["GPUMETER_TOPIC_PARTITIONS"]) == s.topic_partitions
        assert env["GPUMETER_CLICKHOUSE_DATABASE"] == s.clickhouse_database


def test_published_ports_match_the_local_stack() -> None:
    s = Settings()
    ports = {
        svc: [p.split(":")[0] for p in spec.get("ports", [])]
        for svc, spec in COMPOSE["services"].items()
    }
    assert str(infra_default("KAFKA_PORT")) in ports["kafka"]
    assert s.kafka_bootstrap.endswith(f":{infra_default('KAFKA_PORT')}")
    assert str(infra_default("CLICKHOUSE_PORT")) in ports["clickhouse"]
    assert s.clickhouse_port == infra_default("CLICKHOUSE_PORT")
    assert str(infra_default("CLICKHOUSE_HTTP_PORT")) in ports["clickhouse"]
    assert str(infra_default("STRIPE_MOCK_PORT")) in ports["stripe-mock"]
    assert s.stripe_api_base.endswith(f":{infra_default('STRIPE_MOCK_PORT')}")
    assert str(infra_default("S3_PORT")) in ports["s3"]
    assert s.s3_endpoint_url.endswith(f":{infra_default('S3_PORT')}")
    assert f"{s.api_port}" in ports["api"]
    assert COMPOSE["services"]["api"]["environment"]["GPUMETER_API_PORT"] == str(s.api_port)


def test_images_are_the_real_services_at_the_pinned_versions() -> None:
    kafka_pom = (REPO_ROOT / "infra" / "kafka" / "pom.xml").read_text()
    kafka_version = re.search(r"<kafka.version>([^<]+)</kafka.version>", kafka_pom)
    images = {n: s.get("image", "") for n, s in COMPOSE["services"].items()}
    assert images["kafka"].startswith("apache/kafka:")
    assert kafka_version
    assert images["kafka"] == f"apache/kafka:{kafka_version.group(1)}"
    assert images["clickhouse"].startswith("clickhouse/clickhouse-server")
    stripe_pin = re.search(
        r"^STRIPE_MOCK_VERSION=(v[\d.]+)$",
        (REPO_ROOT / "infra" / "stripe-mock.sh").read_text(),
        re.M,
    )
    assert stripe_pin and images["stripe-mock"] == f"stripe/stripe-mock:{stripe_pin.group(1)}"
    moto_pin = re.search(
        r"^MOTO_VERSION=([\d.]+)$", (REPO_ROOT / "infra" / "moto-s3.sh").read_text(), re.M
    )
    assert moto_pin and images["s3"] == f"motoserver/moto:{moto_pin.group(1)}"


def test_dockerfile_installs_the_package_it_runs() -> None:
    text = Path(REPO_ROOT / "Dockerfile").read_text()
    assert "pip install" in text and 'ENTRYPOINT ["gpumeter"]' in text
