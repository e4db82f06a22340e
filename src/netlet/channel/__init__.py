"""Tasklets and channels with Stackless semantics, local or across nodes."""

from netlet.channel._channel import Case, Channel, ChannelStatistics, channel
from netlet.channel._remote import ChannelEndpoint, RemoteChannel, connect_channel
from netlet.channel._select import receiving, select, select_aio, sending
from netlet.channel._tasklet import Tasklet, spawn, tasklet

__all__ = [
    "Case",
    "Channel",
    "ChannelEndpoint",
    "ChannelStatistics",
    "RemoteChannel",
    "Tasklet",
    "channel",
    "connect_channel",
    "receiving",
    "select",
    "select_aio",
    "sending",
    "spawn",
    "tasklet",
]
