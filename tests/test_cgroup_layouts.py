"""The cgroup side without a kernel: the container runtimes' cgroup layouts
(pipeline.cgroups.container_of), mountinfo parsing, and the cgroup fields the C formatter
writes (binary-safe like every other name). Nothing here needs root."""

from __future__ import annotations

import base64
import json
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import _core
from pipeline.cgroups import Mount, container_of, parse_mountinfo

H1 = "0123456789abcdef" * 4  # 64 hex digits
H2 = "fedcba9876543210" * 4


def test_docker_layouts() -> None:
    assert container_of(f"/system.slice/docker-{H1}.scope".encode()) == ("docker", H1)
    assert container_of(f"/docker/{H1}".encode()) == ("docker", H1)
    # rootless docker under the user's manager, and systemd inside the container
    assert container_of(
        f"/user.slice/user-1000.slice/user@1000.service/app.slice/docker-{H1}.scope".encode()
    ) == ("docker", H1)
    assert container_of(f"/system.slice/docker-{H1}.scope/init.scope".encode()) == ("docker", H1)
    # the daemon itself is not a container
    assert container_of(b"/system.slice/docker.service") is None


def test_kubernetes_layouts() -> None:
    pod = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1d2c_3b.slice"
    assert container_of(f"{pod}/cri-containerd-{H1}.scope".encode()) == ("containerd", H1)
    assert container_of(f"{pod}/crio-{H1}.scope".encode()) == ("cri-o", H1)
    assert container_of(f"{pod}/docker-{H2}.scope".encode()) == ("docker", H2)
    # kubelet's cgroupfs driver: the runtime is not in the path
    assert container_of(f"/kubepods/besteffort/pod8a1c-77/{H1}".encode()) == ("cri", H1)
    assert container_of(f"/kubepods/pod8a1c-77/{H2}".encode()) == ("cri", H2)
    # the pod itself, and a hex name outside kubepods, are no container
    assert container_of(pod.encode()) is None
    assert container_of(f"/pod8a1c-77/{H1}".encode()) is None
    # cri-o's conmon sits beside the container and is not one
    assert container_of(f"/system.slice/crio-conmon-{H1}.scope".encode()) is None


def test_podman_layouts() -> None:
    assert container_of(f"/machine.slice/libpod-{H1}.scope".encode()) == ("podman", H1)
    assert container_of(f"/machine.slice/libpod-{H1}.scope/container".encode()) == ("podman", H1)
    assert container_of(f"/libpod_parent/libpod-{H1}".encode()) == ("podman", H1)
    assert container_of(
        f"/system.slice/container-web.service/libpod-payload-{H2}".encode()) == ("podman", H2)
    assert container_of(
        f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{H1}.scope".encode()
    ) == ("podman", H1)
    # conmon, the monitor process, is not the container
    assert container_of(f"/machine.slice/libpod-conmon-{H1}.scope".encode()) is None
    assert container_of(b"/machine.slice/machine-libpod_pod_" + H1.encode() + b".slice") is None


def test_nspawn_layouts() -> None:
    assert container_of(b"/machine.slice/systemd-nspawn@web.service") == ("systemd-nspawn", "web")
    # systemd's unit-name escaping of '-'
    assert container_of(b"/machine.slice/systemd-nspawn@db\\x2d1.service/payload/init.scope") \
        == ("systemd-nspawn", "db-1")
    assert container_of(b"/machine.slice/systemd-nspawn@web.service/supervisor") is None
    assert container_of(b"/machine.slice/machine-web.scope") == ("machined", "web")
    assert container_of(b"/machine.slice/machine-build\\x2d7.scope/x") == ("machined", "build-7")
    # only under machine.slice, and only names machined accepts
    assert container_of(b"/system.slice/systemd-nspawn@web.service") is None
    assert container_of(b"/machine.slice/machine-we b.scope") is None
    assert container_of(b"/machine.slice/machine-\\x2fetc.scope") is None


def test_nested_containers_give_the_inner_one() -> None:
    assert container_of(
        f"/system.slice/docker-{H1}.scope/docker/{H2}".encode()) == ("docker", H2)


def test_near_misses_are_not_containers() -> None:
    for p in (f"/system.slice/docker-{H1[:-1]}.scope",  # 63 digits
              f"/system.slice/docker-{H1}0.scope",  # 65
              f"/system.slice/docker-{H1.upper()}.scope",  # runtimes write lower case
              f"/system.slice/docker-{H1}.service",
              f"/system.slice/xdocker-{H1}.scope",
              f"/system.slice/cri-containerd-{H1}",
              f"/docker/{H1}/",  # a trailing slash changes nothing: still the container
              ):
        want = ("docker", H1) if p == f"/docker/{H1}/" else None
        assert container_of(p.encode()) == want, p


# Components without a run of 64 hex digits and never under machine.slice: a container's
# cgroup needs one of these, so none of them may be taken for one.
_component = st.binary(min_size=1, max_size=80).filter(
    lambda b: b"/" not in b and b != b"machine.slice"
    and not re.search(rb"[0-9a-f]{64}", b))


@settings(max_examples=400)
@given(st.lists(_component, min_size=1, max_size=8))
def test_no_false_positive_on_random_names(parts: list[bytes]) -> None:
    assert container_of(b"/" + b"/".join(parts)) is None


@settings(max_examples=200)
@given(st.lists(_component, max_size=4), st.lists(_component, max_size=4),
       st.text("0123456789abcdef", min_size=64, max_size=64))
def test_a_scope_anywhere_is_found(above: list[bytes], below: list[bytes], hexid: str) -> None:
    path = b"/" + b"/".join([*above, f"libpod-{hexid}.scope".encode(), *below])
    assert container_of(path) == ("podman", hexid)


def test_mountinfo() -> None:
    text = (b"24 1 0:22 / /sys rw - sysfs sysfs rw\n"
            b"41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup cgroup rw,memory\n"
            b"42 31 0:39 /docker/abc /mnt/cg\\040v2 rw shared:9 - cgroup2 cgroup2 rw\n"
            b"43 31 0:40 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n")
    # the first cgroup2 mount; mountinfo's octal escapes undone; optional fields skipped
    assert parse_mountinfo(text) == Mount(point=b"/mnt/cg v2", root=b"/docker/abc")
    assert parse_mountinfo(b"24 1 0:22 / /sys rw - sysfs sysfs rw\n") is None


def fields(frag: bytes) -> dict[str, object]:
    out: dict[str, object] = json.loads(b"{" + frag[1:] + b"}")
    return out


@settings(max_examples=300)
@given(st.binary(max_size=300).filter(lambda b: b"\0" not in b))
def test_cgroup_path_is_binary_safe(path: bytes) -> None:
    f = fields(_core.format_cgroup(path))
    exact = base64.b64decode(str(f["cgroup_b64"])) if "cgroup_b64" in f else \
        str(f["cgroup"]).encode()
    assert exact == path
    assert ("cgroup_b64" in f) == (not _is_utf8(path))
    assert "container_runtime" not in f and "container_id" not in f


def _is_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def test_cgroup_fields_in_a_whole_line() -> None:
    frag = _core.format_cgroup(f"/system.slice/docker-{H1}.scope".encode(), "docker", H1)
    line = _core.format_event(b"x", b"touch", cgroup_id=(1 << 64) - 1, cgroup_fields=frag)
    ev = json.loads(line)
    assert (ev["cgroup_id"], ev["cgroup"], ev["container_runtime"], ev["container_id"]) == (
        (1 << 64) - 1, f"/system.slice/docker-{H1}.scope", "docker", H1)
    unknown = json.loads(_core.format_event(b"x", b"t", cgroup_id=7,
                                            cgroup_fields=_core.format_cgroup(None)))
    assert (unknown["cgroup_id"], unknown["cgroup"]) == (7, None)
    assert "container_runtime" not in unknown and "container_id" not in unknown
    # without fields (a drain with no table) only the id
    bare = json.loads(_core.format_event(b"x", b"t", cgroup_id=9))
    assert bare["cgroup_id"] == 9 and "cgroup" not in bare and "container_id" not in bare
