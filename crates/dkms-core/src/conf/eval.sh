# Evaluates a dkms.conf and its /etc/dkms override files the way dkms does, then prints
# the directives back in a form no value can confuse. Run by conf::evaluate with
# `bash --norc --noprofile -c <this> eval <marker> <context...> -- <files...>`.
#
# Output, all NUL-terminated fields:
#   V <name> <index> <value>   one element of a directive (scalars are index 0)
#   M <name> <index> <0|1|2>   whether $kernelver/$arch matched that element as a bash
#                              ERE (=~): 0 matched, 1 did not, 2 invalid regex
#   E <file> <stderr text>     what sourcing that file printed on stderr
#   X <file>                   that file exited the shell while being sourced
#   U <file> <reason>          that file exists but could not be opened (EACCES)
#   P <name> <value>           PACKAGE_NAME/PACKAGE_VERSION as the last file that set
#                              it left it, before the round trip: word splitting turns
#                              a newline into a space, and the refusal must name the
#                              real value
# The marker separates a file's stderr from its dump; it is random per run.

__mark=$1
kernelver=$2 arch=$3 kernel_source_dir=$4 kernel_config=$5
dkms_tree=$6 source_tree=$7 install_tree=$8 module=$9 module_version=${10}
shift 11

__directives=(
    PACKAGE_NAME PACKAGE_VERSION
    BUILT_MODULE_NAME BUILT_MODULE_LOCATION DEST_MODULE_NAME DEST_MODULE_LOCATION
    STRIP MAKE MAKE_MATCH PATCH PATCH_MATCH
    PRE_BUILD POST_BUILD POST_ADD PRE_INSTALL POST_INSTALL POST_REMOVE
    AUTOINSTALL BUILD_DEPENDS BUILD_DEPENDS_REBUILD NO_WEAK_MODULES
    BUILD_EXCLUSIVE_KERNEL BUILD_EXCLUSIVE_KERNEL_MIN BUILD_EXCLUSIVE_KERNEL_MAX
    BUILD_EXCLUSIVE_ARCH BUILD_EXCLUSIVE_CONFIG
    CLEAN REMAKE_INITRD MODULES_CONF MODULES_CONF_OBSOLETES MODULES_CONF_ALIAS_TYPE
    MODULES_CONF_OBSOLETE_ONLY OBSOLETE_BY
)

# The order dkms restores its recognised variables in (a later one sees the earlier
# ones during the round trip below).
__upstream_order=(
    PACKAGE_NAME PACKAGE_VERSION POST_ADD POST_BUILD POST_INSTALL POST_REMOVE PRE_BUILD
    PRE_INSTALL BUILD_DEPENDS BUILD_EXCLUSIVE_ARCH BUILD_EXCLUSIVE_CONFIG
    BUILD_EXCLUSIVE_KERNEL BUILD_EXCLUSIVE_KERNEL_MIN BUILD_EXCLUSIVE_KERNEL_MAX
    MAKE MAKE_MATCH PATCH PATCH_MATCH BUILT_MODULE_NAME BUILT_MODULE_LOCATION
    DEST_MODULE_NAME DEST_MODULE_LOCATION STRIP AUTOINSTALL NO_WEAK_MODULES
    BUILD_DEPENDS_REBUILD OBSOLETE_BY CLEAN REMAKE_INITRD MODULES_CONF
    MODULES_CONF_OBSOLETES MODULES_CONF_ALIAS_TYPE MODULES_CONF_OBSOLETE_ONLY
)
__cr=$'\r'
__identifiers=(PACKAGE_NAME PACKAGE_VERSION)
declare -A __pass1

for __file in "$@"; do
    # A missing override file is normal; one this user cannot open is not (as root,
    # this runs as the unprivileged build user, who may not reach a private tree):
    # say so, rather than read it as empty.
    if ! { : <"$__file"; } 2>/dev/null; then
        __why=$( { LC_ALL=C; : <"$__file"; } 2>&1 )
        [[ $__why == *"No such file or directory"* ]] ||
            printf 'U\0%s\0%s\0' "$__file" "${__why##*: }"
        continue
    fi
    __text=$(<"$__file")
    # Each file is sourced in a subshell, as dkms does, so functions and helper
    # variables of one file do not leak into the next: only directives carry over.
    # Carriage returns are dropped so CRLF files evaluate like LF files.
    __out=$(
        declare -A __before
        for __name in "${__identifiers[@]}"; do
            [[ -v $__name ]] && __before[$__name]=${!__name}
        done
        if [[ $__text == *$'\r'* ]]; then
            source <(printf '%s\n' "${__text//$'\r'/}") 2>&1 >/dev/null
        else
            source "$__file" 2>&1 >/dev/null
        fi
        printf '%s' "$__mark"
        # dkms's round trip: each element is echoed unquoted inside double quotes
        # (one trailing CR dropped, word-split on IFS, globbed, joined by one space)
        # as an assignment that is sourced back below, in this frame, where it is
        # expanded again inside double quotes. That is how dkms removes the quotes
        # of zfs's `--host=\"...\"`, and how a `'${kernelver}'` written in single
        # quotes still expands at read time. Letting bash do both passes keeps
        # every quirk (an embedded `"a b"` leaves the directive unset, as in dkms).
        for __name in "${__upstream_order[@]}"; do
            for __i in $(eval echo \${!"${__name}"[@]}); do
                eval echo '$__name[$__i]=\"${'"${__name}"'[$__i]%$__cr}\"'
            done
        done
        for __name in "${__identifiers[@]}"; do
            if [[ -v $__name && ${!__name} != "${__before[$__name]-}" ]]; then
                printf '__pass1[%s]=%q\n' "$__name" "${!__name%$__cr}"
            fi
        done
        printf '%s' "$__mark"
    )
    if [[ $__out != *"$__mark"*"$__mark" ]]; then
        printf 'X\0%s\0' "$__file"
        continue
    fi
    __err=${__out%"$__mark"*"$__mark"}
    __dump=${__out#"$__err$__mark"}
    __dump=${__dump%"$__mark"}
    [[ -n $__err ]] && printf 'E\0%s\0%s\0' "$__file" "$__err"
    # Sourced in this frame as dkms sources its temp file: an assignment the round
    # trip breaks keeps the value from before this file (unset for the dkms.conf).
    source <(printf '%s\n' "$__dump")
done

for __name in "${__directives[@]}"; do
    declare -n __ref=$__name
    for __i in "${!__ref[@]}"; do
        __value=${__ref[$__i]}
        printf 'V\0%s\0%s\0%s\0' "$__name" "$__i" "${__value%$'\r'}"
    done
    unset -n __ref
done

for __name in "${!__pass1[@]}"; do
    printf 'P\0%s\0%s\0' "$__name" "${__pass1[$__name]}"
done

__match() {
    local name=$1 subject=$2 i pattern rc
    declare -n arr=$name
    for i in "${!arr[@]}"; do
        pattern=${arr[$i]}
        [[ -n $pattern ]] || continue
        [[ $subject =~ $pattern ]]
        rc=$?
        printf 'M\0%s\0%s\0%s\0' "$name" "$i" "$rc"
    done
}
__match MAKE_MATCH "$kernelver"
__match PATCH_MATCH "$kernelver"
__match BUILD_EXCLUSIVE_KERNEL "$kernelver"
__match BUILD_EXCLUSIVE_ARCH "$arch"
