#!/usr/bin/env bash
# The FinOps Foundation's focus-validator (PyPI) in its own virtual environment under
# $GPUMETER_LOCAL_DIR/focus-validator/venv: it needs Python >= 3.12 (found on PATH or in
# pyenv) and, with it, pyarrow < 21 (newer pyarrow fails on import with its numpy pin).
# usage: infra/focus-validator.sh {install|path|check}
source "$(dirname "$0")/common.sh"
SERVICE=focus-validator
FOCUS_VALIDATOR_VERSION=2.2.1
VENV=$LOCAL/focus-validator/venv
STAMP=$VENV/.installed
WANT="focus-validator==$FOCUS_VALIDATOR_VERSION pyarrow<21"

python312() { # the first Python >= 3.12: on PATH, then pyenv's versions
  local py candidates=(python3.13 python3.12)
  local root
  root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
  candidates+=("$root"/versions/3.1[2-9]*/bin/python3)
  for py in "${candidates[@]}"; do
    if "$py" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
      command -v "$py" 2>/dev/null || echo "$py"
      return 0
    fi
  done
  return 1
}

check() { # the pinned versions, and the validator explains a rule offline from its site-packages
  "$VENV/bin/python" - "$FOCUS_VALIDATOR_VERSION" <<'PY' 2>/dev/null || return 1
import sys
from importlib.metadata import version
ok = version("focus_validator") == sys.argv[1] and int(version("pyarrow").split(".")[0]) < 21
sys.exit(0 if ok else 1)
PY
  local site
  site=$("$VENV/bin/python" -c 'import focus_validator, os; print(os.path.dirname(os.path.dirname(focus_validator.__file__)))') &&
    (cd "$site" && "$VENV/bin/focus-validator" --validate-version 1.2 --block-download \
      --explain-mode --filter-rules CostAndUsage-D-000-M >/dev/null 2>&1)
}

install() {
  if check; then echo "$WANT" >"$STAMP"; return 0; fi
  local py start=$SECONDS
  py=$(python312) || die "focus-validator needs Python >= 3.12: none on PATH or in pyenv (pyenv install 3.12)"
  log "installing focus-validator $FOCUS_VALIDATOR_VERSION with $("$py" --version 2>&1) into $VENV"
  rm -rf "$VENV"
  "$py" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip >&2
  # shellcheck disable=SC2086  # WANT holds several requirement specifiers
  "$VENV/bin/pip" install -q $WANT >&2 || die "pip install $WANT failed (is PyPI reachable?)"
  check || die "focus-validator is installed but does not run (see $VENV)"
  echo "$WANT" >"$STAMP"
  log "installed in $((SECONDS - start))s"
}

case "${1:-}" in
  install) with_lock install ;;
  path) echo "$VENV" ;;
  check) check ;;
  *) echo "usage: $0 {install|path|check}" >&2; exit 2 ;;
esac
