"""The notebook's companion: every name `mini_project.ipynb` calls, gathered from the module of the engine
(`cifar10_resnet/`, one job per module: its `__init__` lists them) that does each job.

Read it top to bottom as a map of the project:
- `recipe`       a run's settings: one frozen record built from a stored configuration (`Recipe.of`)
- `data`         CIFAR-10, its splits, and batches augmented on the device
- `networks`     the registry of networks (a run's "arch" -> its builder, filled by the notebook), counts
- `engine`       the machine a run trains on, and its precision and SGD
- `step`         one SGD update built from the recipe, the loss in one function (`training_loss`)
- `averages`     averages of the weights: EMA, lookahead
- `checkpoints`  a run saved and resumed
- `training`     the schedule and its parameter groups, and `fit`: the loop
- `evaluation`   predictions with test-time views, scores, the confusion matrix
- `experiments`  the runs' names in the store, and `run_experiment`: one run trained and tested, or served
- `choices`      choosing on validation, and the noise of an accuracy
- `text`         counts, durations and log lines, wrapped to the PDF's page
Beside them: `store` (results on disk), `cuda_graph` (the step as a CUDA graph), `checks` (bad input), `plan`
(what Run all will cost), `report` (tables and analysis), `figures` (its figures), `findings` (the findings the
paper states too), `predictions` (a hidden test set), `air_resnet` (AirResNet, registered beside the notebook's
networks) and `safe_pickle`.
Importing this module checks the torch version and nothing else: no data is read, no device touched.
"""
from __future__ import annotations

import torch

from cifar10_resnet.checks import require_torch

require_torch(torch.__version__)  # one line naming the version, before anything fails deeper on an old torch

# the recipe and the data
from cifar10_resnet.recipe import DEFAULTS, KNOWN, Recipe, check_config, check_keys  # noqa: E402
from cifar10_resnet.data import (CIFAR_FOLDER, CLASSES, EVAL_BATCH, QUICK_SUBSET, TEST_IMAGES,  # noqa: E402
                                 Augmentation, Batches, Data, Normalisation, channel_stats, crop_flip, cutout,
                                 eval_batches, load_cifar10, prepare_data, read_batch, split_train_val,
                                 training_batches)
# the networks: registered by name, counted
from cifar10_resnet.networks import (BUDGET, Registry, count_parameters, fit_to_data, flops_per_image,  # noqa: E402
                                     network_table, notebook_namespace, notebook_networks, registry,
                                     torchsummary_total, unwrap)
# training one model (the machine and precision, the step, weight averages, checkpoints, the loop), and scoring it
from cifar10_resnet.engine import (Engine, device_name, environment_report, from_decoupled, pick_device,  # noqa: E402
                                   set_seed, sgd)
from cifar10_resnet.step import EagerStep, EpochSums, Step, make_step, training_loss  # noqa: E402
from cifar10_resnet.averages import Lookahead, ModelEMA  # noqa: E402
from cifar10_resnet.checkpoints import joined_kind  # noqa: E402
from cifar10_resnet.training import FitResult, Progress, fit, make_scheduler, parameter_groups  # noqa: E402
from cifar10_resnet.evaluation import (TTA_WEIGHTS, confusion_matrix, evaluate, evaluate_recipe,  # noqa: E402
                                       predict, tta_views)
# experiments, and the choices between them
from cifar10_resnet.experiments import (BASE_LABEL, FIRST_SWEEP, REFERENCE_RUN, SEED_PREFIX,  # noqa: E402
                                        SWEEP_PREFIX, TUNING, WHITENING_IMAGES, Protocol, result_line, run_experiment,
                                        seed_name)
from cifar10_resnet.choices import (NOISE, best_by_validation, choose_by_mean, choose_recipe,  # noqa: E402
                                    combine_changes, difference_error, is_diverged, learning_rate_on_validation,
                                    recipe_score, seed_spread, standard_error, validation_score, verdict)
from cifar10_resnet.text import count_text, format_duration, wrapped  # noqa: E402
