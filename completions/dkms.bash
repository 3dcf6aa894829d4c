# bash completion for dkms and dkms-hook (the dkms-hook package ships it as
# /usr/share/bash-completion/completions/dkms, linked to dkms-hook).
#
# Completes actions, options, module/version pairs from the DKMS tree and kernel
# releases from the install tree, read at the time of the TAB: nothing is cached.
# --dkmstree and --installtree on the command line being completed are honoured.

# Prints the words of the DKMS tree: module names, or module/version pairs.
_dkms_tree_words() {
    local tree=$1 what=$2 module=${3-} m v
    local IFS=$'\n'
    for m in "$tree"/*/; do
        m=${m%/}
        m=${m##*/}
        [[ -d $tree/$m ]] || continue
        [[ -n $module && $m != "$module" ]] && continue
        case $what in
        modules) printf '%s\n' "$m" ;;
        versions | pairs)
            for v in "$tree/$m"/*/; do
                v=${v%/}
                v=${v##*/}
                # A version directory holds the source link; kernel-* are install links.
                [[ -e $tree/$m/$v/source || -L $tree/$m/$v/source ]] || continue
                if [[ $what == pairs ]]; then printf '%s/%s\n' "$m" "$v"; else printf '%s\n' "$v"; fi
            done
            ;;
        esac
    done
}

# Prints the kernel releases of the install tree (directories with a modules tree or headers).
_dkms_kernels() {
    local tree=$1 k
    for k in "$tree"/*/; do
        k=${k%/}
        [[ -d $k/kernel || -e $k/build || -f $k/modules.dep ]] || continue
        printf '%s\n' "${k##*/}"
    done
}

_dkms() {
    local cur prev words cword
    if declare -F _init_completion >/dev/null; then
        _init_completion -n = || return
    else
        cur=${COMP_WORDS[COMP_CWORD]}
        prev=${COMP_WORDS[COMP_CWORD - 1]}
        words=("${COMP_WORDS[@]}")
        cword=$COMP_CWORD
    fi

    local actions="add remove build unbuild install uninstall match autoinstall mktarball
        ldtarball status generate_mok kernel_preinst kernel_postinst kernel_prerm"
    if [[ ${words[0]##*/} == dkms-hook ]]; then
        actions+=" hook plan cleanup"
    fi
    local options="-m --module -v -k --kernelver -a --arch -c --all --force -q --quiet
        --verbose --debug --directive --config --archive --kernelsourcedir --dkmstree
        --sourcetree --installtree --templatekernel --binaries-only --source-only
        --no-depmod -j --version --help"
    if [[ ${words[0]##*/} == dkms-hook ]]; then
        options+=" --json --compat --yes --retry-failed --allow-untrusted-sources --color
            --etc-dir --settings"
    fi

    # The trees: the defaults, or what this command line names.
    local dkms_tree=/var/lib/dkms install_tree=/usr/lib/modules action="" module="" i
    for ((i = 1; i < ${#words[@]}; i++)); do
        case ${words[i]} in
        --dkmstree) dkms_tree=${words[i + 1]-} ;;
        --dkmstree=*) dkms_tree=${words[i]#*=} ;;
        --installtree) install_tree=${words[i + 1]-} ;;
        --installtree=*) install_tree=${words[i]#*=} ;;
        -m | --module) ((i + 1 < cword)) && module=${words[i + 1]%%/*} ;;
        esac
        if [[ -z $action && $i -lt $cword && " ${actions//$'\n'/ } " == *" ${words[i]} "* ]]; then
            action=${words[i]}
        fi
    done

    local IFS=$'\n'
    case $prev in
    -m | --module)
        mapfile -t COMPREPLY < <(compgen -W "$(_dkms_tree_words "$dkms_tree" modules)
$(_dkms_tree_words "$dkms_tree" pairs)" -- "$cur")
        return
        ;;
    -v)
        mapfile -t COMPREPLY < <(compgen -W "$(_dkms_tree_words "$dkms_tree" versions "$module")" -- "$cur")
        return
        ;;
    -k | --kernelver | --templatekernel)
        mapfile -t COMPREPLY < <(compgen -W "$(_dkms_kernels "$install_tree")" -- "$cur")
        return
        ;;
    -a | --arch)
        mapfile -t COMPREPLY < <(compgen -W "$(uname -m)" -- "$cur")
        return
        ;;
    -c | --config | --archive | --settings)
        mapfile -t COMPREPLY < <(compgen -f -- "$cur")
        return
        ;;
    --kernelsourcedir | --dkmstree | --sourcetree | --installtree | --etc-dir)
        mapfile -t COMPREPLY < <(compgen -d -- "$cur")
        return
        ;;
    --color)
        mapfile -t COMPREPLY < <(compgen -W "auto always never" -- "$cur")
        return
        ;;
    -j | --directive) return ;;
    esac

    if [[ $cur == -* ]]; then
        IFS=$' \t\n'
        mapfile -t COMPREPLY < <(compgen -W "$options" -- "$cur")
        return
    fi
    if [[ -z $action ]]; then
        IFS=$' \t\n'
        mapfile -t COMPREPLY < <(compgen -W "$actions" -- "$cur")
        return
    fi
    case $action in
    add | ldtarball)
        # A source directory, a dkms.conf or a tarball.
        mapfile -t COMPREPLY < <(compgen -f -- "$cur")
        ;;
    build | install)
        mapfile -t COMPREPLY < <(compgen -W "$(_dkms_tree_words "$dkms_tree" pairs)" -- "$cur")
        if [[ $cur == */* || $cur == .* ]]; then
            mapfile -t -O "${#COMPREPLY[@]}" COMPREPLY < <(compgen -d -- "$cur")
        fi
        ;;
    remove | unbuild | uninstall | mktarball | status)
        mapfile -t COMPREPLY < <(compgen -W "$(_dkms_tree_words "$dkms_tree" pairs)" -- "$cur")
        ;;
    hook)
        mapfile -t COMPREPLY < <(compgen -W $'install\nupgrade\nremove' -- "$cur")
        ;;
    esac
}

complete -F _dkms dkms dkms-hook
