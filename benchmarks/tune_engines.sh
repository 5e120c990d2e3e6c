#!/usr/bin/env bash
# Optuna vs Ray Tune on this machine (docs/tune.md): install time and size in scratch venvs, import and startup
# time of one trivial trial, three times each. Output appended to /tmp/probe/results.txt (copied to benchmarks/results/tune_engines.txt).
mkdir -p /tmp/probe
set -e
for name in optuna ray; do
  rm -rf /tmp/${name}probe
  python3 -m venv /tmp/${name}probe
  /tmp/${name}probe/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
  base=$(du -sk /tmp/${name}probe | cut -f1)
  if [ $name = optuna ]; then pkg="optuna==4.9.0"; else pkg="ray[tune]"; fi
  t0=$(date +%s.%N)
  /tmp/${name}probe/bin/pip install -q --no-cache-dir "$pkg" > /tmp/probe/${name}_pip.log 2>&1
  t1=$(date +%s.%N)
  after=$(du -sk /tmp/${name}probe | cut -f1)
  echo "$name install_s=$(echo "$t1-$t0" | bc) size_kb=$((after-base)) dists=$(/tmp/${name}probe/bin/pip list 2>/dev/null | tail -n +3 | wc -l)" >> /tmp/probe/results.txt
  /tmp/${name}probe/bin/pip freeze | grep -iE "^(optuna|ray|sqlalchemy|alembic)==" >> /tmp/probe/results.txt
done
for i in 1 2 3; do
  /tmp/optunaprobe/bin/python -c "import time;t=time.perf_counter();import optuna;t1=time.perf_counter();s=optuna.create_study(storage='sqlite:////tmp/probe/o$i.db');s.optimize(lambda t:t.suggest_float('x',0,1),n_trials=1);print('optuna import_s=%.3f import+sqlite_study+1trial_s=%.3f'%(t1-t,time.perf_counter()-t))" 2>/dev/null >> /tmp/probe/results.txt
  /tmp/rayprobe/bin/python -c "
import time;t=time.perf_counter()
from ray import tune
t1=time.perf_counter()
import ray
ray.init(num_cpus=1, include_dashboard=False, logging_level='ERROR')
t2=time.perf_counter()
def f(c): return {'y': c['x']}
tune.Tuner(f, param_space={'x': tune.uniform(0,1)}, tune_config=tune.TuneConfig(num_samples=1, metric='y', mode='max')).fit()
t3=time.perf_counter()
print('ray import_s=%.3f init_s=%.3f 1trial_s=%.3f total_s=%.3f'%(t1-t,t2-t1,t3-t2,t3-t))
ray.shutdown()" 2>/dev/null | grep '^ray' >> /tmp/probe/results.txt
done
echo done >> /tmp/probe/results.txt
echo "# largest site-packages entries (du -sk, KB)" >> /tmp/probe/results.txt
(cd /tmp/optunaprobe/lib/python3.11/site-packages && du -sk optuna sqlalchemy alembic numpy numpy.libs | sed 's/^/optuna-venv /') >> /tmp/probe/results.txt
(cd /tmp/rayprobe/lib/python3.11/site-packages && du -sk ray pyarrow pandas numpy | sed 's/^/ray-venv /') >> /tmp/probe/results.txt
