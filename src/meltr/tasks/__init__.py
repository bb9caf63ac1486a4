"""The four downstream tasks of MELTR: retrieval, captioning, QA and sentiment."""

from meltr.tasks.base import TASKS, TaskModel, build_task
from meltr.tasks.captioning import Captioning
from meltr.tasks.heads import QuestionAnswering, Sentiment
from meltr.tasks.retrieval import Retrieval

__all__ = ["TASKS", "Captioning", "QuestionAnswering", "Retrieval", "Sentiment", "TaskModel", "build_task"]
