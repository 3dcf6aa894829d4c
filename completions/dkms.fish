# fish completion for dkms and dkms-hook: actions, options, module/version pairs from
# the DKMS tree and kernel releases from the install tree, read at the time of the TAB.
# --dkmstree and --installtree on the command line being completed are honoured.

function __dkms_tree_option --argument-names name default
    set -l words (commandline -opc)
    for i in (seq (count $words))
        switch $words[$i]
            case "--$name"
                set -l next (math $i + 1)
                if test $next -le (count $words)
                    echo $words[$next]
                    return
                end
            case "--$name=*"
                string replace -- "--$name=" '' $words[$i]
                return
        end
    end
    echo $default
end

function __dkms_pairs
    set -l tree (__dkms_tree_option dkmstree /var/lib/dkms)
    for source in $tree/*/*/source
        string replace -r -- '^'(string escape --style=regex $tree)'/(.*)/source$' '$1' $source
    end
end

function __dkms_modules
    set -l tree (__dkms_tree_option dkmstree /var/lib/dkms)
    for m in $tree/*/
        basename $m
    end
    __dkms_pairs
end

function __dkms_kernels
    set -l tree (__dkms_tree_option installtree /usr/lib/modules)
    for k in $tree/*/
        if test -d $k/kernel -o -e $k/build
            basename $k
        end
    end
end

set -l __dkms_actions add remove build unbuild install uninstall match autoinstall mktarball ldtarball status generate_mok kernel_preinst kernel_postinst kernel_prerm

for cmd in dkms dkms-hook
    complete -c $cmd -f
    complete -c $cmd -n "not __fish_seen_subcommand_from $__dkms_actions hook plan cleanup" -a "$__dkms_actions"
    complete -c $cmd -n "__fish_seen_subcommand_from build install remove unbuild uninstall mktarball status" -a "(__dkms_pairs)"
    complete -c $cmd -n "__fish_seen_subcommand_from add ldtarball" -F
    complete -c $cmd -s m -l module -x -a "(__dkms_modules)" -d 'module or module/version'
    complete -c $cmd -s v -x -d 'module version'
    complete -c $cmd -s k -l kernelver -x -a "(__dkms_kernels)" -d 'kernel release'
    complete -c $cmd -s a -l arch -x -d architecture
    complete -c $cmd -s c -r -F -d 'dkms.conf to use'
    complete -c $cmd -l all -d 'every kernel'
    complete -c $cmd -l force -d 'redo what is done'
    complete -c $cmd -s q -l quiet -d 'print nothing'
    complete -c $cmd -l verbose -d 'more detail'
    complete -c $cmd -l debug -d 'log every command run'
    complete -c $cmd -l directive -x -d 'NAME=VALUE'
    complete -c $cmd -l config -r -F -d 'kernel config file'
    complete -c $cmd -l archive -r -F -d tarball
    complete -c $cmd -l kernelsourcedir -x -a "(__fish_complete_directories)" -d 'kernel headers'
    complete -c $cmd -l dkmstree -x -a "(__fish_complete_directories)" -d 'DKMS tree'
    complete -c $cmd -l sourcetree -x -a "(__fish_complete_directories)" -d 'source tree'
    complete -c $cmd -l installtree -x -a "(__fish_complete_directories)" -d 'install tree'
    complete -c $cmd -l templatekernel -x -a "(__dkms_kernels)" -d 'kernel to match'
    complete -c $cmd -l binaries-only -d 'tarball without source'
    complete -c $cmd -l source-only -d 'tarball without builds'
    complete -c $cmd -l no-depmod -d 'do not run depmod'
    complete -c $cmd -s j -x -d 'parallel jobs'
    complete -c $cmd -l version -d 'print the version'
    complete -c $cmd -l help -d 'print help'
end
complete -c dkms-hook -n "not __fish_seen_subcommand_from $__dkms_actions hook plan cleanup" -a 'hook plan cleanup'
complete -c dkms-hook -n "__fish_seen_subcommand_from hook" -a 'install upgrade remove'
