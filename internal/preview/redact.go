package preview

import "strings"

// Redacted returns r with the values the status API shows only to the token's holder
// replaced by "<redacted>": a ConfigMap's data and binaryData, and containers' env (as
// GET .../objects does). Secret values are never kept in the first place.
func (r Result) Redacted() Result {
	out := r
	out.Changed = make([]ChangedObject, len(r.Changed))
	for i, o := range r.Changed {
		o.Fields = append([]FieldChange(nil), o.Fields...)
		configMap := o.APIVersion == "v1" && strings.HasPrefix(o.Object, "ConfigMap/")
		for j, f := range o.Fields {
			if (configMap && (under(f.Path, "data") || under(f.Path, "binaryData"))) || isEnv(f.Path) {
				o.Fields[j].From, o.Fields[j].To = hidden(nilIfEmpty(f.From)), hidden(nilIfEmpty(f.To))
			}
		}
		out.Changed[i] = o
	}
	return out
}

// under reports whether path is field or below it.
func under(path, field string) bool {
	return path == field || strings.HasPrefix(path, field+".") || strings.HasPrefix(path, field+"[")
}

// isEnv reports whether path is a container's env list or in it.
func isEnv(path string) bool {
	return strings.HasSuffix(path, ".env") || strings.Contains(path, ".env[") || strings.Contains(path, ".env.")
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}
