"""Cluster-wide MPI jobs: Open MPI's remote daemons launched through the agents instead of SSH.

``orted`` checks a daemon command line, ``launcher`` is the ``plm_rsh_agent`` mpirun calls on the leader,
``member`` is what a member node runs for the job, ``cluster_kind`` the leader's and members' halves of a
cluster HPL job.
"""
