"""The stream the nats sink publishes into: checked at start, created when missing.

Publishing to a subject no stream stores gets no acknowledgement at all, so the sink would
only time out and retry; checking before the first event turns that into one line at start.
"""

from __future__ import annotations

from typing import Any

from pipeline.sinks.base import SinkError
from pipeline.sinks.nats_conn import subject_matches, why


def stream_subjects(config: dict[str, Any]) -> list[str]:
    given = [s.strip() for s in config["stream_subjects"].split(",") if s.strip()]
    return given or [config["subject"].replace("{host}", "*")]


async def jetstream_problem(nc: Any) -> str | None:
    """None when JetStream answers on this connection, else what to do."""
    import nats.errors
    import nats.js.errors

    try:
        await nc.jetstream().account_info()
    except (nats.js.errors.ServiceUnavailableError, nats.js.errors.NoStreamResponseError,
            nats.errors.NoRespondersError):
        return ("JetStream is not enabled on the server; start nats-server with -js (or "
                "jetstream {} in its configuration)")
    except Exception as e:
        return f"JetStream does not answer ({why(e)}); check the server's JetStream configuration"
    return None


async def ensure_stream(where: str, nc: Any, config: dict[str, Any], subject: str) -> None:
    """The configured stream exists (made if allowed) and stores `subject`; else SinkError."""
    import nats.js.api as api
    import nats.js.errors

    problem = await jetstream_problem(nc)
    if problem is not None:
        raise SinkError(f"{where}: {problem}")
    jsm = nc.jetstream()
    name = config["stream"]
    try:
        info = await jsm.stream_info(name)
    except nats.js.errors.NotFoundError:
        info = None
    except Exception as e:
        raise SinkError(f"{where}: cannot look up stream {name}: {why(e)}; check the "
                        "server's JetStream state") from None
    if info is None:
        if not config["create_stream"]:
            raise SinkError(f"{where}: stream {name} does not exist; create it or set "
                            "create_stream = true")
        subjects = stream_subjects(config)
        if not any(subject_matches(s, subject) for s in subjects):
            raise SinkError(f"{where}: option 'stream_subjects' ({', '.join(subjects)}) does "
                            f"not cover the subject {subject}; add it")
        cfg = api.StreamConfig(
            name=name, subjects=subjects,
            retention=api.RetentionPolicy(config["retention"]),
            storage=api.StorageType(config["storage"]),
            max_bytes=config["max_bytes"] or -1,
            max_age=config["max_age"] or None,
            num_replicas=config["replicas"],
            duplicate_window=config["duplicate_window"],
            discard=api.DiscardPolicy.OLD,
        )
        try:
            await jsm.add_stream(cfg)
        except Exception as e:
            raise SinkError(f"{where}: cannot create stream {name}: {why(e)}; fix the stream "
                            "keys (replicas above the cluster's size, a subject another "
                            "stream already stores) or create it by hand") from None
        return
    subjects = list(info.config.subjects or [])
    if not any(subject_matches(s, subject) for s in subjects):
        raise SinkError(f"{where}: stream {name} stores {', '.join(subjects) or 'no subject'}, "
                        f"not {subject}; change the subject or the stream's subjects")
