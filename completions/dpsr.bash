# bash completion for dpsr. Generated from its command definitions
# (firmware/controller/cli/program.ts) by npm run docs:cli. Do not edit.
_dpsr() {
  local cur prev cmd opts
  cur=${COMP_WORDS[COMP_CWORD]}
  prev=${COMP_WORDS[COMP_CWORD-1]}
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=($(compgen -W "drives inspect clone sync verify recover restore migrate status forget jobs cancel reprotect failover help --help --version" -- "$cur"))
    return
  fi
  cmd=${COMP_WORDS[1]}
  case "$prev" in
    --state-dir) COMPREPLY=($(compgen -d -- "$cur")); return ;;
    --token-file) COMPREPLY=($(compgen -f -- "$cur")); return ;;
    --mode) COMPREPLY=($(compgen -W "compare manifest" -- "$cur")); return ;;
    --sector-size) COMPREPLY=($(compgen -W "512 4096" -- "$cur")); return ;;
    --url) COMPREPLY=($(compgen -W "http://127.0.0.1:8750" -- "$cur")); return ;;
    --journal-budget|--partition|-p) return ;;
  esac
  case "$cmd" in
    drives) opts="--json --help" ;;
    inspect) opts="--json --sector-size --help" ;;
    clone) opts="--json -y --yes --state-dir --direct --sector-size --force --add-standby -q --quiet --url --token-file --pair --window --no-window --no-wait --help" ;;
    sync) opts="--json -y --yes --state-dir --direct --sector-size --journal-budget -p --partition --mode --force-generation -q --quiet --url --token-file --pair --window --no-window --no-wait --help" ;;
    verify) opts="--json --direct --sector-size -p --partition -q --quiet --url --token-file --pair --state-dir --window --no-window --no-wait --help" ;;
    recover) opts="--json -y --yes --state-dir --direct --sector-size -q --quiet --url --token-file --pair --no-wait --help" ;;
    restore) opts="--json -y --yes --state-dir --direct --sector-size --journal-budget -p --partition --i-mean-restore -q --quiet --url --token-file --pair --window --no-window --no-wait --help" ;;
    migrate) opts="-p --partition --at --json -y --yes --state-dir --direct --sector-size --journal-budget -q --quiet --help" ;;
    status) opts="--json --state-dir --url --token-file --pair --help" ;;
    forget) opts="--json -y --yes --state-dir --help" ;;
    jobs) opts="--json --url --token-file --state-dir --help" ;;
    cancel) opts="--json --rollback --no-rollback --url --token-file --state-dir --help" ;;
    reprotect) opts="--json -y --yes -q --quiet --url --token-file --pair --state-dir --window --no-window --no-wait --help" ;;
    failover) opts="--json -y --yes --hard-off -q --quiet --url --token-file --pair --state-dir --no-wait --help" ;;
    help) COMPREPLY=($(compgen -W "drives inspect clone sync verify recover restore migrate status forget jobs cancel reprotect failover" -- "$cur")); return ;;
    *) return ;;
  esac
  if [[ "$cur" == -* ]]; then
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    return
  fi
  case "$cmd" in
    inspect|clone|sync|verify|recover|restore|migrate)
      # Drives: stable names first, then any path (device nodes, image files).
      if [ -z "$cur" ] && [ -d /dev/disk/by-id ]; then COMPREPLY=(/dev/disk/by-id/*); else COMPREPLY=($(compgen -f -- "$cur")); fi ;;
  esac
}
complete -o filenames -o bashdefault -F _dpsr dpsr
