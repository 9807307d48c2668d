"""One module per IVR node type; NODE_TYPES maps the YAML key to its class."""

from ringmaster.flows.nodes.answer import AnswerNode
from ringmaster.flows.nodes.base import Node, NodeContext, Outcome, TargetSpec
from ringmaster.flows.nodes.branch import BranchNode
from ringmaster.flows.nodes.callback import CallbackNode
from ringmaster.flows.nodes.collect import CollectNode
from ringmaster.flows.nodes.goto import GotoNode
from ringmaster.flows.nodes.hangup import HangupNode
from ringmaster.flows.nodes.http import HttpNode
from ringmaster.flows.nodes.menu import MenuNode
from ringmaster.flows.nodes.play import PlayNode
from ringmaster.flows.nodes.queue import QueueNode
from ringmaster.flows.nodes.say import SayNode
from ringmaster.flows.nodes.schedule import ScheduleNode
from ringmaster.flows.nodes.setvar import SetNode
from ringmaster.flows.nodes.transfer import TransferNode
from ringmaster.flows.nodes.voicemail import VoicemailNode

NODE_TYPES: dict[str, type[Node]] = {n.kind: n for n in (
    AnswerNode, PlayNode, SayNode, MenuNode, CollectNode, SetNode, BranchNode, ScheduleNode, GotoNode,
    HttpNode, TransferNode, VoicemailNode, CallbackNode, QueueNode, HangupNode)}

__all__ = ["NODE_TYPES", "Node", "NodeContext", "Outcome", "TargetSpec"]
