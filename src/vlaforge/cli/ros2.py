"""``vlaforge ros2`` (logic in vlaforge.apps.ros2; needs the extra: ``pip install 'vlaforge[ros2]'``)."""

from __future__ import annotations

import typer

from vlaforge.cli.options import Checkpoint, Server, TokenFile


def ros2_cmd(
    checkpoint: Checkpoint = "",
    server: Server = "",
    token_file: TokenFile = "",
    embodiment: str = typer.Option("", help="the robot (needed when the policy has several)"),
    param: list[str] = typer.Option([], "--param",
                                    help="node parameter NAME=VALUE (repeatable): topic_prefix, control_hz, "
                                         "tick_on, qos_reliability, strategy, max_force, ..."),
) -> None:
    """A ROS 2 node: images, state and instruction in; safe actions and status out at the control rate."""
    from vlaforge.apps.ros2 import PARAMETERS, run_node

    params = {}
    for item in param:
        name, sep, value = item.partition("=")
        if not sep or name not in PARAMETERS:
            raise ValueError(f"--param {item!r}: expected NAME=VALUE with NAME one of {sorted(PARAMETERS)}")
        default = PARAMETERS[name]
        params[name] = type(default)(value) if not isinstance(default, str) else value
    try:
        import rclpy  # noqa: F401
    except ImportError:
        raise ValueError("vlaforge ros2 needs the ROS 2 wheels: pip install 'vlaforge[ros2]' (ros-rclpy, "
                         "ros-rmw-fastrtps-cpp, ros-std-msgs, ros-sensor-msgs)") from None
    run_node(checkpoint or None, server or None, token_file or None, embodiment or None, params)
