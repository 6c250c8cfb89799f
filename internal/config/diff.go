package config

import "reflect"

// Changes says how one config differs from another, by repo key.
type Changes struct {
	// Added are repos only in the new config.
	Added []Key
	// Removed are repos only in the old config.
	Removed []Key
	// Changed are repos in both whose settings differ.
	Changed []Key
}

// Empty reports whether nothing changed.
func (c Changes) Empty() bool { return len(c.Added)+len(c.Removed)+len(c.Changed) == 0 }

// Diff compares two configs' repos; a nil config has none.
func Diff(old, new *Config) Changes {
	var c Changes
	before := map[Key]Repo{}
	if old != nil {
		for _, r := range old.Repos {
			before[r.Key()] = r
		}
	}
	after := map[Key]bool{}
	if new != nil {
		for _, r := range new.Repos {
			k := r.Key()
			after[k] = true
			prev, ok := before[k]
			switch {
			case !ok:
				c.Added = append(c.Added, k)
			case !sameRepo(prev, r):
				c.Changed = append(c.Changed, k)
			}
		}
	}
	if old != nil {
		for _, r := range old.Repos {
			if !after[r.Key()] {
				c.Removed = append(c.Removed, r.Key())
			}
		}
	}
	return c
}

// sameRepo compares two entries, ignoring where in the file they stand.
func sameRepo(a, b Repo) bool {
	a.Line, b.Line = 0, 0
	return reflect.DeepEqual(a, b)
}
