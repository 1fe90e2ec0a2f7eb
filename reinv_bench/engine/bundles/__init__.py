"""Results that travel: bundles (``pack``, ``verify``), merging rows of other workdirs
(``merge``) and a zoo of trained targets (``zoo add``, ``zoo list``).

A bundle is one ``.tar.gz`` file::

    bundle.json                  format, version, schema version of its rows, the packing environment
    manifest.json                every other file's SHA-256 and size; every artifact's key and SHA-256
    rows.json                    the rows (all columns: outcomes with the judges' answers, config, env)
    protocols/<scenario>.txt     the protocol card of each scenario of the rows
    artifacts/<kk>/<key>.pt      --with-models: target and evaluation-model checkpoints (and what
    artifacts/<kk>/<key>.json      they were trained from), with their records
    samples/<cell>/<i>-class<c>.png   --with-samples N: the first N reconstructions of each cell

``bundle.json`` and ``manifest.json`` come first, so a reader refuses a newer format early. The
manifest lets anyone check the bundle (``verify``): a file changed after packing no longer
matches it. The manifest's own SHA-256 (printed by ``pack`` and ``verify``) names the bundle: a
lab that publishes it lets others check they hold the same bytes (the manifest guards against
damage and edits made without rewriting it, not against a forger who rewrites it too).

A bundle, and another workdir's results.db, are read as untrusted input: members must be
regular files with names of the layout above (no absolute path, no ``..``, no link), of bounded
size and count; extraction uses tarfile's ``data`` filter; checkpoints are loaded with
``torch.load(weights_only=True)`` (a pickle that asks for code is refused, nothing runs), and
every row is checked column by column before anything is written. Every refusal is one
``BundleError`` line, and nothing is written before all inputs are checked.
"""

from reinv_bench.engine.bundles.merging import Conflict, MergeReport, differences, merge, read_source
from reinv_bench.engine.bundles.reading import Bundle, check_checkpoint, read
from reinv_bench.engine.bundles.rows import (
    FORMAT,
    MAX_FILE,
    MAX_JSON,
    MAX_MEMBERS,
    MAX_TOTAL,
    MODEL_KINDS,
    VERSION,
    BundleError,
    check_row,
    describe_environment,
    environment_of,
    read_workdir,
)
from reinv_bench.engine.bundles.zoo import ZooModel, zoo_add, zoo_list

# ``pack`` (reinv_bench.engine.bundles.packing) is not re-exported here: it reads reconstructions
# (torch), and this package is imported by commands that start without torch.
__all__ = [
    "FORMAT",
    "MAX_FILE",
    "MAX_JSON",
    "MAX_MEMBERS",
    "MAX_TOTAL",
    "MODEL_KINDS",
    "VERSION",
    "Bundle",
    "BundleError",
    "Conflict",
    "MergeReport",
    "ZooModel",
    "check_checkpoint",
    "check_row",
    "describe_environment",
    "differences",
    "environment_of",
    "merge",
    "read",
    "read_source",
    "read_workdir",
    "zoo_add",
    "zoo_list",
]
