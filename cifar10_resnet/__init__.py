"""The engine behind `mini_project.ipynb`: residual networks for CIFAR-10 trained, stored and reported. One job per
module; the notebook reaches them through `helpers.py` at the repository's root (its map of the names it calls).

- `recipe`       a run's settings: one frozen record built from a stored configuration (`Recipe.of`), each in range
- `data`         CIFAR-10 (its batch files checked by content), its splits, batches augmented on the device
- `networks`     the registry of networks (a run's "arch" -> its builder; the notebook's model cells fill it), counts
- `air_resnet`   airbench96's network under 5M parameters (round 3), registered beside the notebook's
- `engine`       the machine a run trains on (device, versions, seeds), its precision and SGD
- `step`         one SGD update, built from the recipe, with the loss in one function; eager or a CUDA graph
- `averages`     averages of the weights while training: an exponential moving average, lookahead
- `checkpoints`  a run saved atomically and resumed where it stopped
- `training`     the schedule and its parameter groups, and `fit`: the loop, on one screen
- `cuda_graph`   the training step captured as a CUDA graph and replayed, after a check against eager steps
- `evaluation`   predictions with test-time views, scores, the confusion matrix
- `experiments`  the runs' names in the store, and `run_experiment`: one run trained and tested, or served
- `choices`      choosing on validation, and the noise of an accuracy
- `text`         counts, durations and log lines, wrapped to the PDF's page
- `checks`       bad input (parameters, folders, torch's version), stopped with one line before anything trains
- `store`        results on disk: histories, summaries, weights, checkpoints, written atomically, served when whole
- `safe_pickle`  pickles read without running code or taking more memory than the file holds
- `plan`         what a Run all will train and what that costs on this device
- `report`       tables, the analysis of the stored runs, the appendix's code listing
- `figures`      the report's figures, sized for the page
- `findings`     the findings that the notebook prints and the paper typesets, each computed once
- `predictions`  a hidden test set's classes as a CSV

Importing the package imports none of its modules: nothing runs, no data is read, no device is touched.
"""
