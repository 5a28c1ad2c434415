# Copyright (c) mmepsa contributors. All rights reserved.
from .channels_last_fpn import ChannelsLastFPN

__all__ = ['ChannelsLastFPN']
