"""The README's "In a ROS 2 workspace" path, done for real: colcon builds a fresh workspace
and the node starts from its install space (issue #15 B.1).

What the test does is what the README tells a user, with the differences this machine
forces, each named here:

- the workspace's ``src/`` holds a copy of this checkout's files (``git ls-files``: what
  a clone holds) as ``src/derain_ros``, and links to the two message mirrors beside it
  (``src/event_camera_msgs``, ``src/dv_ros2_msgs``), so that colcon finds them;
- the underlay is the project's environment (ROS 2 Kilted from the PyPI wheels, colcon
  from PyPI: ``make setup``) instead of ``source /opt/ros/$ROS_DISTRO/setup.bash``; no
  apt or rosdep runs (the dependencies are already in the environment), and rosdep's keys
  are checked against the lists below instead;
- the node is started the way ``ros2 run derain_ros derain_node`` starts it (the installed
  executable, with ``install/setup.bash`` sourced; there is no ``ros2`` CLI in the wheels)
  with the installed ``config/derain.yaml``, fed a frame and events over real DDS;
- ``launch_ros`` has no wheel, so the launch file runs only where it is importable, and
  is skipped here with that reason; its structure is checked everywhere.

Cost: one colcon build of three packages (the two rosidl mirrors dominate: about 30 s on
2 cores) and one node start (numba compiles the event kernels of the fresh install).
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ROOT, ros_env, stop_node

DOMAIN_ID = 47
MIRRORS = ("event_camera_msgs", "dv_ros2_msgs")
PACKAGES = ("derain_ros", *MIRRORS)
VENV = Path(sys.prefix)
COLCON = VENV / "bin" / "colcon"
IMAGE_TOPIC = "/rig47/image_raw"
EVENT_TOPIC = "/rig47/events"
PY = f"python{sys.version_info.major}.{sys.version_info.minor}"

#: ROS packages the three package.xml files may depend on: each is released in Humble,
#: Jazzy, Kilted and Rolling (ros/rosdistro */distribution.yaml, commit 8468e88).
ROS_PACKAGES = frozenset({
    "rclpy", "rcl_interfaces", "builtin_interfaces", "std_msgs", "sensor_msgs",
    "diagnostic_msgs", "event_camera_msgs", "launch", "launch_ros", "cv_bridge",
    "ament_cmake", "rosidl_default_generators", "rosidl_default_runtime",
    "ament_copyright", "ament_flake8",
})
#: System keys they may use: each is defined in ros/rosdistro rosdep/python.yaml (commit
#: 8468e88). Not there, hence never to be declared: python3-safetensors(-pip),
#: python3-torch-pip, python3-numba-pip, python3-rosbags; nor ament_python (not a key:
#: ``rosdep install`` fails on it).
ROSDEP_KEYS = frozenset({
    "python3-numpy", "python3-opencv", "python3-yaml", "python3-tqdm", "python3-numba",
    "python3-pytorch-pip", "python3-rosbags-pip", "python3-onnxruntime-pip",
    "python3-pytest", "python3-hypothesis",
})

#: Third-party modules the node's code imports -> how a ROS user gets each: a rosdep key
#: (must be in package.xml) or ("pip", name) (must be in the README's pip step).
NODE_IMPORTS: dict[str, str | tuple[str, str]] = {
    "numpy": "python3-numpy", "cv2": "python3-opencv", "yaml": "python3-yaml",
    "tqdm": "python3-tqdm", "numba": "python3-numba", "torch": "python3-pytorch-pip",
    "rosbags": "python3-rosbags-pip", "ruamel": "python3-rosbags-pip",  # rosbags needs it
    "onnxruntime": "python3-onnxruntime-pip", "safetensors": ("pip", "safetensors"),
    "rclpy": "rclpy", "rcl_interfaces": "rcl_interfaces", "sensor_msgs": "sensor_msgs",
    "std_msgs": "std_msgs", "builtin_interfaces": "builtin_interfaces",
    "diagnostic_msgs": "diagnostic_msgs", "event_camera_msgs": "event_camera_msgs",
    "cv_bridge": "cv_bridge",
    # optional, imported only when asked for (derain_ros/ros/interfaces.py)
    "dv_ros2_msgs": ("optional", "msg/dv_ros2_msgs"),
}
#: Parts of derain_ros a node does not run: the CLI's synthesis and evaluation (the
#: setup.py extras ``sim`` and ``eval``).
NOT_THE_NODE = ("derain_ros/sim/", "derain_ros/eval/")


# ----------------------------------------------------------------------- dependencies

def _depends(package_xml: Path) -> list[str]:
    from catkin_pkg.package import parse_package

    pkg = parse_package(str(package_xml))
    pkg.validate()
    deps = (pkg.build_depends + pkg.buildtool_depends + pkg.exec_depends + pkg.test_depends
            + pkg.buildtool_export_depends + pkg.build_export_depends)
    return sorted({d.name for d in deps})


def test_every_dependency_key_resolves() -> None:
    """Each package.xml names only released ROS packages and existing rosdep keys."""
    files = [ROOT / "package.xml", *(ROOT / "msg" / m / "package.xml" for m in MIRRORS)]
    unknown = {str(f.relative_to(ROOT)): [d for d in _depends(f)
                                          if d not in ROS_PACKAGES | ROSDEP_KEYS]
               for f in files}
    assert not any(unknown.values()), f"keys rosdep cannot resolve: {unknown}"
    assert "python3-numba" in _depends(ROOT / "package.xml")  # the codecs' speed


def _third_party_imports() -> dict[str, list[str]]:
    """Top-level modules imported anywhere in the node's code -> files importing them."""
    found: dict[str, list[str]] = {}
    local = {"derain_ros", "derain_training"}
    for path in sorted((ROOT / "derain_ros").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(NOT_THE_NODE):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom)
                     and node.module and node.level == 0 else [])
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in local:
                    found.setdefault(top, []).append(rel)
    return found


def _readme_workspace_section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## In a ROS 2 workspace")
    return text[start:text.index("\n## ", start + 1)]


def test_every_import_of_the_node_is_declared_or_documented() -> None:
    """numba went undeclared once (codecs 100x slower): every third-party import of the
    node's code maps to a package.xml key, the README's pip step, or a lazy optional."""
    declared = set(_depends(ROOT / "package.xml"))
    section = _readme_workspace_section()
    pip_lines = [line for line in section.splitlines() if line.lstrip().startswith("pip install")]
    imports = _third_party_imports()
    assert {"numpy", "numba", "rclpy", "torch"} <= set(imports)  # the scan sees them
    problems = []
    for module, files in sorted(imports.items()):
        how = NODE_IMPORTS.get(module)
        if how is None:
            problems.append(f"{module} ({files[0]}): declare it in package.xml and here")
        elif isinstance(how, str) and how not in declared:
            problems.append(f"{module}: package.xml lacks {how}")
        elif isinstance(how, tuple) and how[0] == "pip" and not any(
                how[1] in line.split() for line in pip_lines):
            problems.append(f"{module}: the README's pip step lacks {how[1]}")
    assert not problems, "\n".join(problems)


# ----------------------------------------------------------------------- the workspace

def _copy_checkout(dest: Path) -> None:
    """This checkout's files as a clone has them (tracked, plus new files not ignored)."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"],
                                cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        listed = b""
    files = [f for f in listed.decode().split("\0") if f and (ROOT / f).is_file()]
    if not files:  # not a git checkout: everything but build outputs and caches
        shutil.copytree(ROOT, dest, symlinks=True, ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "install", "log", "out", "runs", "*_cache",
            "__pycache__", "*.egg-info"))
        return
    for rel in files:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target, follow_symlinks=False)


def _build_env(ws: Path) -> dict[str, str]:
    """The underlay: the project's environment in place of /opt/ros/$ROS_DISTRO."""
    env = ros_env(DOMAIN_ID)
    for var in ("AMENT_PREFIX_PATH", "CMAKE_PREFIX_PATH", "COLCON_PREFIX_PATH", "PYTHONPATH"):
        env.pop(var, None)
    env.update(VIRTUAL_ENV=str(VENV), PATH=f"{VENV / 'bin'}{os.pathsep}{env['PATH']}",
               AMENT_PREFIX_PATH=str(VENV), CMAKE_PREFIX_PATH=str(VENV),
               COLCON_HOME=str(ws / ".colcon"))  # no user defaults or mixins
    return env


class Workspace:
    """A built workspace: its root, the colcon output and the build time."""

    def __init__(self, root: Path, listing: str, build_s: float, log: Path) -> None:
        self.root, self.listing, self.build_s, self.log = root, listing, build_s, log
        self.install = root / "install"

    def share(self, pkg: str = "derain_ros") -> Path:
        return self.install / pkg / "share" / pkg

    def in_install(self, *cmd: str) -> list[str]:
        """``cmd`` run in a shell that sourced ``install/setup.bash``, as a user does."""
        return ["bash", "-c", 'set -e; source install/setup.bash; exec "$@"', "bash", *cmd]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    if not COLCON.is_file():
        pytest.fail(f"colcon is not installed in {VENV}: run `make setup` "
                    "(requirements/ros.txt installs colcon-common-extensions)")
    ws = tmp_path_factory.mktemp("derain_ws")
    src = ws / "src"
    _copy_checkout(src / "derain_ros")
    for mirror in MIRRORS:  # the README's links: the mirrors as siblings in src/
        (src / mirror).symlink_to(Path("derain_ros") / "msg" / mirror)
    env = _build_env(ws)
    listing = subprocess.run([str(COLCON), "list"], cwd=ws, env=env, capture_output=True,
                             text=True, timeout=60)
    assert listing.returncode == 0, listing.stderr
    log = ws / "colcon_build.log"
    t0 = time.monotonic()
    with log.open("w") as out:
        build = subprocess.run([str(COLCON), "build", "--event-handlers", "console_direct-"],
                               cwd=ws, env=env, stdout=out, stderr=subprocess.STDOUT,
                               timeout=600)
    build_s = time.monotonic() - t0
    print(f"colcon build of {len(PACKAGES)} packages: {build_s:.1f} s")
    assert build.returncode == 0, f"colcon build failed:\n{log.read_text()[-6000:]}"
    return Workspace(ws, listing.stdout, build_s, log)


def test_colcon_finds_the_mirrors_and_installs_everything(workspace: Workspace) -> None:
    found = {line.split()[0]: line.split()[-1] for line in workspace.listing.splitlines()}
    assert found == {"derain_ros": "(ros.ament_python)", "event_camera_msgs":
                     "(ros.ament_cmake)", "dv_ros2_msgs": "(ros.ament_cmake)"}, found
    # `rosdep install --from-paths src` finds packages with catkin_pkg: the links work there
    from catkin_pkg.packages import find_packages

    assert {p.name for p in find_packages(str(workspace.root / "src")).values()} == set(PACKAGES)
    share = workspace.share()
    for rel in ("package.xml", "launch/derain.launch.py", "config/derain.yaml",
                "config/fastdds_localhost.xml"):
        assert (share / rel).is_file(), rel
    index = workspace.install / "derain_ros/share/ament_index/resource_index/packages"
    assert (index / "derain_ros").is_file()
    lib = workspace.install / "derain_ros" / "lib"
    for exe in ("derain_node", "derain-ros"):  # where `ros2 run derain_ros ...` looks
        assert os.access(lib / "derain_ros" / exe, os.X_OK), exe
    site = lib / PY / "site-packages"
    assert (site / "derain_ros/model/weights/derain_tiny.safetensors").is_file()
    for mirror in MIRRORS:  # built by colcon, with the Python and C type support
        prefix = workspace.install / mirror
        assert (prefix / "share" / mirror / "package.xml").is_file(), mirror
        assert list((prefix / "lib" / PY / "site-packages" / mirror).glob(
            "*_s__rosidl_typesupport_c*.so")), mirror
        assert list((prefix / "lib").glob(f"lib{mirror}__rosidl_typesupport_fastrtps_c.so"))


PROBE = """
import ament_index_python.packages as index, derain_ros, dv_ros2_msgs.msg, event_camera_msgs.msg
print(derain_ros.__file__)
print(event_camera_msgs.msg.__file__)
print(dv_ros2_msgs.msg.__file__)
print(index.get_package_share_directory("derain_ros"))
"""


def test_the_install_space_is_what_runs(workspace: Workspace) -> None:
    """Python, the ament index and the message packages resolve into install/, not into
    this checkout or the environment (which has its own copies of the mirrors)."""
    out = subprocess.run(workspace.in_install(sys.executable, "-c", PROBE), cwd=workspace.root,
                         env=ros_env(DOMAIN_ID), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    paths = [Path(p) for p in out.stdout.split()]
    assert len(paths) == 4, out.stdout
    for path in paths:
        assert path.is_relative_to(workspace.install), path
    assert paths[3] == workspace.share()


@pytest.fixture(scope="module")
def installed_node(workspace: Workspace) -> Iterator[subprocess.Popen]:
    exe = workspace.install / "derain_ros/lib/derain_ros/derain_node"
    cmd = workspace.in_install(
        str(exe), "--ros-args", "--params-file", str(workspace.share() / "config/derain.yaml"),
        "-r", f"image:={IMAGE_TOPIC}", "-r", f"events:={EVENT_TOPIC}",
        "-p", "warmup_width:=64", "-p", "warmup_height:=48", "-p", "num_threads:=1",
        "-p", "drop_policy:=block")
    log = workspace.root / "node.log"
    proc = subprocess.Popen(cmd, cwd=workspace.root, env=ros_env(DOMAIN_ID),
                            stdout=log.open("w"), stderr=subprocess.STDOUT)
    proc.log_path = log  # type: ignore[attr-defined]
    yield proc
    stop_node(proc)


@pytest.mark.ros
def test_the_installed_node_derains_over_dds(workspace: Workspace,
                                             installed_node: subprocess.Popen) -> None:
    from test_node import Rig  # the rig of the node tests: a DAVIS on DDS (64 x 48)

    rig = Rig("derain_node", IMAGE_TOPIC, EVENT_TOPIC, domain_id=DOMAIN_ID)
    log: Path = installed_node.log_path  # type: ignore[attr-defined]
    try:
        def matched() -> bool:
            return (rig.pub_image.get_subscription_count() > 0
                    and rig.pub_events.get_subscription_count() > 0)

        started = rig.spin_until(lambda: matched() or installed_node.poll() is not None, 120)
        assert started and installed_node.poll() is None, f"no node:\n{log.read_text()}"
        maps = Path(f"/proc/{installed_node.pid}/maps").read_text()
        assert str(workspace.install / "event_camera_msgs") in maps  # colcon's type support
        rig.step(3)
        stamps = rig.step(3)
        assert rig.wait_outputs(stamps[:2], timeout=60), f"no output:\n{log.read_text()}"
        out = {m.header.stamp.sec * 10**9 + m.header.stamp.nanosec: m
               for m in rig.outputs["image"]}
        msg = out[stamps[0]]
        assert (msg.width, msg.height, msg.encoding) == (64, 48, "rgb8")
        assert len(msg.data) == 64 * 48 * 3
    finally:
        rig.close()
    # The installed params file refuses random weights: the installed shipped weights ran.
    assert "allow_random_weights: false" in (workspace.share() / "config/derain.yaml").read_text()


# ----------------------------------------------------------------------- the launch file

def _call_name(node: ast.Call) -> str:
    return node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")


def test_launch_file_structure(workspace: Workspace) -> None:
    """Checked without launch_ros: the arguments it declares are the ones it uses, and its
    Node is this package's installed executable (a console script of setup.py)."""
    tree = ast.parse((workspace.share() / "launch" / "derain.launch.py").read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in functions
    table = next(n.value for n in tree.body if isinstance(n, ast.AnnAssign | ast.Assign)
                 and isinstance(n.value, ast.Dict) and "ARGUMENTS" in ast.unparse(n))
    declared = {ast.literal_eval(k) for k in table.keys if k is not None}
    assert {"params_file", "image_topic", "event_topic", "namespace"} <= declared
    used = set()
    for call in calls:  # LaunchConfiguration("x"), or LaunchConfiguration(name) over a tuple
        if _call_name(call) == "LaunchConfiguration" and isinstance(call.args[0], ast.Constant):
            used.add(call.args[0].value)
    for comp in ast.walk(tree):
        if isinstance(comp, ast.DictComp) and "LaunchConfiguration" in ast.unparse(comp):
            used |= set(ast.literal_eval(comp.generators[0].iter))
    assert used and used <= declared, used - declared
    (node,) = [c for c in calls if _call_name(c) == "Node"]
    kw = {k.arg: k.value for k in node.keywords}
    assert ast.literal_eval(kw["package"]) == "derain_ros"
    executable = ast.literal_eval(kw["executable"])
    setup = ast.parse((ROOT / "setup.py").read_text())
    scripts = next(ast.literal_eval(d.values[i]) for d in ast.walk(setup)
                   if isinstance(d, ast.Dict) for i, k in enumerate(d.keys)
                   if isinstance(k, ast.Constant) and k.value == "console_scripts")
    entry = {s.split("=")[0].strip(): s.split("=")[1].strip() for s in scripts}
    assert entry.get(executable) == "derain_ros.node:main", entry
    assert (workspace.install / "derain_ros/lib/derain_ros" / executable).is_file()


def _launch_ros_available(workspace: Workspace) -> bool:
    probe = subprocess.run(workspace.in_install(sys.executable, "-c", "import launch_ros"),
                           cwd=workspace.root, env=ros_env(DOMAIN_ID), capture_output=True)
    return probe.returncode == 0


LAUNCH = """
import sys
from launch import LaunchDescription, LaunchService
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
service = LaunchService(argv=[])
service.include_launch_description(IncludeLaunchDescription(
    PythonLaunchDescriptionSource(sys.argv[1]),
    launch_arguments={"image_topic": sys.argv[2], "event_topic": sys.argv[3],
                      "node_name": sys.argv[4]}.items()))
sys.exit(service.run())
"""


@pytest.mark.ros
def test_launch_file_runs_where_launch_ros_is_installed(workspace: Workspace) -> None:
    if not _launch_ros_available(workspace):
        pytest.skip("launch_ros is not importable here (it has no PyPI wheel); its "
                    "structure is checked by test_launch_file_structure")
    from test_node import Rig

    launch_file = workspace.share() / "launch" / "derain.launch.py"
    log = workspace.root / "launch.log"
    name, image_topic, event_topic = "derain_launched", "/rig47l/image_raw", "/rig47l/events"
    proc = subprocess.Popen(
        workspace.in_install(sys.executable, "-c", LAUNCH, str(launch_file), image_topic,
                             event_topic, name),
        cwd=workspace.root, env=ros_env(DOMAIN_ID), stdout=log.open("w"),
        stderr=subprocess.STDOUT)
    rig = Rig(name, image_topic, event_topic, domain_id=DOMAIN_ID)
    try:
        assert rig.spin_until(lambda: rig.pub_image.get_subscription_count() > 0, 120), \
            log.read_text()
        for _ in range(20):  # the params file's drop_policy (newest) may drop some
            rig.step(1, pause=0.1)
            if rig.outputs["image"]:
                break
        assert rig.spin_until(lambda: bool(rig.outputs["image"]), 30), log.read_text()
    finally:
        rig.close()
        stop_node(proc)
