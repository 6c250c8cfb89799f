package realnode

import "github.com/deployd/deployd/internal/simcluster"

// spawn starts one of the node's own programs, logging to <Dir>/<name>.log, as the
// cluster starts its components; what a killed run leaves is swept at the next Start.
func (n *Node) spawn(name, bin string, args ...string) (*simcluster.Process, error) {
	p, err := simcluster.StartProcess(n.Dir, n.path(name+".log"), name, bin, args...)
	if err != nil {
		return nil, err
	}
	n.procs = append(n.procs, p)
	return p, nil
}
