"""Registration of the Ankh3 tasks on the Beam workers of the cache job (`tasks.cache_tasks`).

Beam workers on other machines look tasks up by name in seqio's registry, which is empty there.
`tasks.cache_tasks` sends the gin text that configures the tasks as the pipeline option
`--ankh3_tasks_gin` and lists this module in the job's `modules_to_import`; importing it on a
worker, where Beam has set the runtime pipeline options, registers the same tasks. Importing it
anywhere else (no runtime options, or no such option) registers nothing.
"""
from apache_beam.options import pipeline_options
from apache_beam.options.value_provider import RuntimeValueProvider
import gin
import seqio

from tasks import mixtures

TASKS_GIN_OPTION = "ankh3_tasks_gin"


class TasksGinOptions(pipeline_options.PipelineOptions):
    """Declares `--ankh3_tasks_gin` so that Beam ships it to the workers."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--" + TASKS_GIN_OPTION, default="",
            help="Gin text that configures ankh3_pretrain_mixture; set by tasks.cache_tasks.")


def register_tasks(config: str) -> list[str]:
    """Parses the gin text, registers `ankh3_pretrain` and returns the names of its tasks."""
    with gin.unlock_config():
        gin.parse_config(config)
    mixture = mixtures.ankh3_pretrain_mixture()
    return [task.name for task in seqio.get_mixture_or_task(mixture).tasks]


def register_from_pipeline_options() -> None:
    """On a Beam worker, registers the tasks described by the `--ankh3_tasks_gin` option."""
    config = RuntimeValueProvider.get_value(TASKS_GIN_OPTION, str, "")
    if config:
        register_tasks(config)


register_from_pipeline_options()
