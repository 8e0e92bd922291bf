# Sourced by the scripts the device tool runs on the lent GPU machine (gpu_check.sh,
# gpu_train_demo_v2.sh): the carried transformers wheel (.whl/, see README "GPU runtime") installed
# into /tmp/site, kernels/ importable as skillsoup_kernels, the project root on PYTHONPATH, offline.
# Needs ROOT, a log function and LOGFILE (where pip's output goes) from the caller.
SITE=/tmp/site
mkdir -p "$SITE"
if ls "$ROOT"/.whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        "$ROOT"/.whl/*.whl >>"$LOGFILE" 2>&1 || log "WARNING: installing .whl/*.whl failed; using the image's packages"
else
    log "WARNING: no .whl/ carried: transformers is the image's own (5.17), the project pins 5.23"
fi
ln -sfn "$ROOT/kernels" "$SITE/skillsoup_kernels"
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false TRANSFORMERS_VERBOSITY=error
