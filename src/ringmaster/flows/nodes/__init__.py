"""One module per IVR node type; NODE_TYPES maps the YAML key to its class."""

from ringmaster.flows.nodes.answer import AnswerNode
from ringmaster.flows.nodes.base import Node, NodeContext
from ringmaster.flows.nodes.hangup import HangupNode
from ringmaster.flows.nodes.play import PlayNode
from ringmaster.flows.nodes.transfer import TransferNode

NODE_TYPES: dict[str, type[Node]] = {n.kind: n for n in (AnswerNode, PlayNode, HangupNode, TransferNode)}

__all__ = ["NODE_TYPES", "Node", "NodeContext"]
